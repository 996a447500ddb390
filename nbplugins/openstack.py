"""OpenStack through the Check-in token: one keystoneauth1 session for novaclient, openstacksdk and the rest.

EGI Notebooks' integration page logs in with keystoneauth1's ``v3.OidcAccessToken``
(identity provider ``egi.eu``, protocol ``openid``, a project id) and the token file read by
hand. :func:`session` does that in one call, with the token from :mod:`nbplugins.tokens`
read again at each (re)authentication, so a token file the hub rotated is picked up, and a
log-in again when the token changes or the Keystone token expires. :func:`auth_plugin` is the
one factory of that plugin; the S3 profiles' EC2 exchange (:mod:`nbplugins.storage.s3`) uses
it too. Sites come by name from ``[openstack.sites.NAME]`` or as a Keystone URL.

Failures are one line each: an unknown site, a project id that is not 32 hex characters, a
URL whose version discovery shows no Keystone v3, the OIDC token refused (with the token
layer's diagnosis), a project the user cannot scope to.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from nbplugins import config as config_mod
from nbplugins import tokens
from nbplugins.errors import (
    AuthError,
    ConfigError,
    NbpluginsError,
    ServiceError,
    TransientError,
    ValidationError,
)
from nbplugins.retry import RETRYABLE_STATUS, Retry, describe, is_transient
from nbplugins.secrets import redact

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_IDENTITY_PROVIDER = "egi.eu"
DEFAULT_PROTOCOL = "openid"
_PROJECT_ID = re.compile(r"[0-9a-fA-F]{32}")
_REFUSED = object()  # what one federated log-in returns when Keystone refused the OIDC token


@dataclass(frozen=True)
class Site:
    """Where to log in: a Keystone v3 URL, the project to scope to, the region and the federation names."""

    name: str | None
    auth_url: str
    project_id: str | None = None
    region: str | None = None
    identity_provider: str = DEFAULT_IDENTITY_PROVIDER
    protocol: str = DEFAULT_PROTOCOL
    verify: bool | str = True

    @property
    def where(self) -> str:
        """The site for messages: ``Keystone at URL`` (and its name)."""
        return f"Keystone at {self.auth_url}" + (f" (site {self.name})" if self.name else "")


@dataclass(frozen=True)
class Project:
    """A project the token can scope to (``GET /v3/auth/projects``)."""

    id: str
    name: str
    domain_id: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class Server:
    """One compute server of a project, as ``openstack server list`` shows it."""

    id: str
    name: str
    status: str
    flavor: str
    addresses: str


def keystone_v3_url(url: str) -> str:
    """``url`` as a Keystone v3 base: http(s), a host, no credentials or query, ending in ``/v3``."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"auth URL {redact(url)!r}: not an http(s) URL of a Keystone v3 endpoint")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError(f"auth URL {redact(url)!r}: must not hold a user name, password, query or fragment")
    path = parts.path.rstrip("/")
    if not path.endswith("/v3"):
        path += "/v3"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def check_project_id(project_id: str, where: str = "project id") -> str:
    """A Keystone project id (32 hexadecimal characters), lower case; ValidationError otherwise."""
    value = project_id.strip()
    if not _PROJECT_ID.fullmatch(value):
        raise ValidationError(f"{where} {project_id!r} is not a Keystone project id (32 hexadecimal characters); "
                              "`nbplugins openstack projects` lists yours")
    return value.lower()


def site(site_or_auth_url: str | None = None, project_id: str | None = None, *,
         identity_provider: str | None = None, protocol: str | None = None, region: str | None = None,
         verify: bool | str | None = None, cfg: config_mod.Config | None = None) -> Site:
    """The site named in ``[openstack.sites.NAME]`` (or ``[openstack] default``), or a Keystone URL, with overrides."""
    section = (cfg or config_mod.get()).openstack
    wanted = (site_or_auth_url or section.default or "").strip()
    known = ", ".join(sorted(section.sites)) or "none configured"
    if not wanted:
        raise ConfigError(f"no OpenStack site given: name one (known: {known}), give a Keystone URL, "
                          "or set [openstack] default")
    if "://" in wanted:
        target = Site(None, keystone_v3_url(wanted))
    else:
        conf = section.sites.get(wanted)
        if conf is None:
            hint = "; an auth URL starts with https://" if any(c in wanted for c in "./:") else ""
            raise ConfigError(f"unknown OpenStack site {wanted!r} (known: {known}){hint}; "
                              f"add [openstack.sites.NAME] to {config_mod.config_path()}")
        if not conf.auth_url:
            raise ConfigError(f"[openstack.sites.{wanted}] has no auth_url (the Keystone v3 URL)")
        target = Site(wanted, keystone_v3_url(conf.auth_url), None, conf.region,
                      conf.identity_provider or DEFAULT_IDENTITY_PROVIDER, conf.protocol or DEFAULT_PROTOCOL,
                      conf.verify)
        if conf.project_id:
            target = replace(target, project_id=check_project_id(conf.project_id,
                                                                 f"[openstack.sites.{wanted}] project_id"))
    changes: dict[str, Any] = {"identity_provider": identity_provider, "protocol": protocol, "region": region,
                               "verify": verify}
    target = replace(target, **{k: v for k, v in changes.items() if v is not None})
    if project_id:
        target = replace(target, project_id=check_project_id(project_id))
    return target


def retryable(exc: BaseException) -> bool:
    """Worth another try: connection failures, timeouts, 408/429/5xx from Keystone or a service."""
    if isinstance(exc, NbpluginsError):
        return isinstance(exc, TransientError)
    if isinstance(exc, (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.RetriableConnectionFailure)):
        return True
    status = getattr(exc, "http_status", None) or getattr(exc, "code", None)
    if isinstance(status, int) and 100 <= status < 600:
        return status in RETRYABLE_STATUS
    return is_transient(exc)


class CheckinAuth(v3.OidcAccessToken):
    """keystoneauth1's OIDC access-token plugin, with the token from :mod:`nbplugins.tokens` at each log-in.

    The first log-in checks the URL is Keystone v3 (version discovery). A refused OIDC token
    is refreshed once (:func:`nbplugins.tokens.with_token_retry`), then explained. When the
    token source hands out another token (the hub rotated the file), the next request logs
    in again with it; an expired Keystone token is replaced by keystoneauth1 itself.
    """

    def __init__(self, target: Site, *, token_provider: tokens.TokenProvider | None = None,
                 retry: Retry | None = None) -> None:
        super().__init__(target.auth_url, target.identity_provider, target.protocol, access_token="",
                         project_id=target.project_id)
        self.site = target
        self._provider = token_provider
        self._retry = (retry or Retry.from_config()).with_(retryable=retryable)
        self._discovered = False
        self._used: str | None = None  # the OIDC token of the current Keystone token
        self._state_lock = threading.Lock()

    @property
    def provider(self) -> tokens.TokenProvider:
        """The token provider: the one given, or the token layer's resolver for the current config."""
        return self._provider or tokens.default_resolver()

    def get_headers(self, session: ks_session.Session, **kwargs: Any) -> Any:
        """The request's ``X-Auth-Token``; a new log-in first when the token source has another OIDC token.

        Checked once per request (here, not in ``get_access``, which a request calls three
        times): reading the token source is cheap, a log-in with a token the hub replaced is not.
        """
        with self._state_lock:
            if self._used is not None and self.auth_ref is not None:
                try:
                    now = self.provider.get().value
                except NbpluginsError:
                    now = None  # no usable OIDC token now: the Keystone token still serves until it expires
                if now is not None and now != self._used:
                    log.info("the OIDC token changed; logging in to %s again", self.site.where)
                    self.invalidate()
        return super().get_headers(session, **kwargs)

    def get_auth_ref(self, session: ks_session.Session, **kwargs: Any) -> Any:
        """Log in (federated, then scoped to the project), retried as one policy; failures are one line."""
        return self._retry.call(lambda: super(CheckinAuth, self).get_auth_ref(session, **kwargs),
                                what=f"{self.site.where}: log in", map_error=self._map_error)

    def get_unscoped_auth_ref(self, session: ks_session.Session) -> Any:
        """The federated log-in with the token layer's OIDC token (one forced refresh if refused)."""
        if not self._discovered:
            discover(session, self.site)
            self._discovered = True

        def attempt(token: tokens.Token) -> Any:
            self.access_token = token.value
            try:
                return v3.OidcAccessToken.get_unscoped_auth_ref(self, session)
            except ks_exc.Unauthorized:
                return _REFUSED
            except ks_exc.NotFound:
                raise ConfigError(f"{self.site.where} has no identity provider {self.site.identity_provider!r} "
                                  f"with protocol {self.site.protocol!r} (HTTP 404 at {self.federated_token_url}); "
                                  "check identity_provider and protocol") from None

        try:
            ref = tokens.with_token_retry(attempt, self.provider, unauthorized=lambda r: r is _REFUSED,
                                          service=self.site.where)
        except AuthError as exc:
            reason = str(exc).partition("(HTTP 401): ")[2] or str(exc)
            raise AuthError(f"{self.site.where} refused the OIDC token (identity provider "
                            f"{self.site.identity_provider!r}, protocol {self.site.protocol!r}): {reason}") from None
        self._used = self.access_token
        return ref

    def _map_error(self, exc: Exception) -> BaseException | None:
        if isinstance(exc, (ks_exc.Unauthorized, ks_exc.Forbidden)):  # the federated log-in maps its own
            return AuthError(f"{self.site.where}: cannot scope to project {self.project_id}: "
                             f"{_message(exc)}; `nbplugins openstack projects` lists the projects you can use")
        return keystone_error(exc, self.site.where, "log in")


def _message(exc: BaseException) -> str:
    return redact(str(getattr(exc, "message", "") or describe(exc))).strip().splitlines()[0][:300]


def keystone_error(exc: BaseException, where: str, what: str) -> BaseException | None:
    """A keystoneauth1 failure as one of nbplugins' errors (None: it is one already)."""
    if isinstance(exc, NbpluginsError):
        return None
    if isinstance(exc, ks_exc.EndpointNotFound):
        return ServiceError(f"{where}: {what}: the project's service catalog has no such endpoint ({_message(exc)})")
    if isinstance(exc, ks_exc.HttpError):
        return ServiceError(f"{where}: {what} answered HTTP {exc.http_status}: {_message(exc)}", exc.http_status)
    status = getattr(exc, "code", None)
    if isinstance(status, int) and hasattr(exc, "message"):  # novaclient's ClientException
        return ServiceError(f"{where}: {what} answered HTTP {status}: {_message(exc)}", status)
    return ServiceError(f"{where}: {what} failed: {_message(exc)}")


def discover(session: ks_session.Session, target: Site) -> None:
    """Check ``target.auth_url`` is Keystone v3 (its version document); ValidationError saying so if not."""
    try:
        response = session.get(target.auth_url, authenticated=False, raise_exc=False,
                               headers={"Accept": "application/json"})
    except ks_exc.ConnectFailure as exc:
        raise TransientError(f"{target.where}: cannot connect: {describe(exc)}") from None
    if response.status_code in RETRYABLE_STATUS:
        raise TransientError(f"{target.where}: version discovery answered HTTP {response.status_code}",
                             response.status_code)
    try:
        body = response.json()
    except ValueError:
        body = None
    version = body.get("version") if isinstance(body, dict) else None
    if response.status_code >= 400 or not isinstance(version, dict) or not str(version.get("id", "")).startswith("v3"):
        seen = f"HTTP {response.status_code}" + ("" if isinstance(body, dict) else ", not JSON")
        raise ValidationError(f"{target.auth_url} is not a Keystone v3 endpoint: version discovery found no v3 "
                              f"version ({seen}); give the Keystone URL, e.g. https://keystone.example.org:5000/v3")


def auth_plugin(target: Site, *, token_provider: tokens.TokenProvider | None = None,
                retry: Retry | None = None) -> CheckinAuth:
    """The one keystoneauth1 auth plugin for Check-in federated log-ins (OpenStack sessions, S3 EC2 keys)."""
    return CheckinAuth(target, token_provider=token_provider, retry=retry)


def _session(target: Site, token_provider: tokens.TokenProvider | None, retry: Retry | None,
             timeout: float) -> ks_session.Session:
    return ks_session.Session(auth=auth_plugin(target, token_provider=token_provider, retry=retry),
                              verify=target.verify, timeout=timeout, app_name="nbplugins")


def session(site_or_auth_url: str | None = None, project_id: str | None = None, *,
            token_provider: tokens.TokenProvider | None = None, identity_provider: str | None = None,
            protocol: str | None = None, verify: bool | str | None = None, retry: Retry | None = None,
            timeout: float = 60.0, connect: bool = True) -> ks_session.Session:
    """A keystoneauth1 session scoped to a project, logged in through the token layer.

    Use it with ``novaclient.client.Client("2.1", session=...)``,
    ``openstack.connection.Connection(session=...)`` or any OpenStack client. ``connect``
    logs in now, so a wrong URL, token or project is reported here and not by the first call.
    """
    target = site(site_or_auth_url, project_id, identity_provider=identity_provider, protocol=protocol,
                  verify=verify)
    if not target.project_id:
        raise ConfigError(f"{target.where}: no project to scope to: give a project id (32 hexadecimal characters) "
                          "or set project_id in the site; `nbplugins openstack projects` lists yours")
    sess = _session(target, token_provider, retry, timeout)
    if connect:
        sess.get_auth_headers()
    return sess


def call(fn: Callable[[], T], where: str, what: str, retry: Retry | None = None) -> T:
    """``fn()`` (a request through a session or a client) retried as one policy; failures as one line."""
    policy = (retry or Retry.from_config()).with_(retryable=retryable)
    return policy.call(fn, what=f"{where}: {what}", map_error=lambda exc: keystone_error(exc, where, what))


def projects(site_or_auth_url: str | None = None, *, token_provider: tokens.TokenProvider | None = None,
             identity_provider: str | None = None, protocol: str | None = None, verify: bool | str | None = None,
             retry: Retry | None = None) -> list[Project]:
    """The projects the token can scope to, by name (``GET /v3/auth/projects`` with an unscoped token)."""
    target = replace(site(site_or_auth_url, identity_provider=identity_provider, protocol=protocol, verify=verify),
                     project_id=None)
    sess = _session(target, token_provider, retry, 60.0)
    body = call(lambda: sess.get(f"{target.auth_url}/auth/projects").json(), target.where, "list projects", retry)
    found = [Project(str(p.get("id", "")), str(p.get("name", "")), str(p.get("domain_id", "")),
                     bool(p.get("enabled", True))) for p in (body.get("projects") or [])]
    return sorted(found, key=lambda p: (p.name, p.id))


def servers(site_or_auth_url: str | None = None, project_id: str | None = None, *,
            sess: ks_session.Session | None = None, region: str | None = None,
            token_provider: tokens.TokenProvider | None = None, retry: Retry | None = None) -> list[Server]:
    """A project's servers (name, status, flavor, addresses) through python-novaclient."""
    from novaclient import client as nova_client

    if sess is not None and isinstance(sess.auth, CheckinAuth) and site_or_auth_url is None:
        target = sess.auth.site  # the session's own site
    else:
        target = site(site_or_auth_url, project_id)
    sess = sess or session(site_or_auth_url, project_id, token_provider=token_provider, retry=retry)
    nova = nova_client.Client("2.1", session=sess, region_name=region or target.region)
    where = target.where
    listed = call(lambda: nova.servers.list(detailed=True), where, "list servers", retry)
    names: dict[str, str] = {}

    def flavor_name(flavor: dict[str, Any]) -> str:
        if flavor.get("original_name"):
            return str(flavor["original_name"])
        fid = str(flavor.get("id", ""))
        if fid and fid not in names:
            try:
                names[fid] = call(lambda: nova.flavors.get(fid).name, where, f"read flavor {fid}", retry)
            except ServiceError as exc:
                if exc.status != 404:
                    raise
                names[fid] = fid  # a flavor deleted since: its id is all there is
        return names.get(fid, fid)

    return [Server(s.id, s.name, s.status, flavor_name(getattr(s, "flavor", {}) or {}),
                   format_addresses(getattr(s, "addresses", {}) or {})) for s in listed]


def format_addresses(addresses: dict[str, list[dict[str, Any]]]) -> str:
    """``net=addr, addr; net2=addr`` as the openstack CLI prints a server's addresses."""
    return "; ".join(f"{net}=" + ", ".join(str(a.get("addr", "")) for a in entries)
                     for net, entries in sorted(addresses.items()))
