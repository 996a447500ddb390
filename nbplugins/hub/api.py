"""A small JupyterHub REST client: users, their servers, start and stop, tokens, with the hub token.

The token comes from :mod:`nbplugins.tokens` (or is given) and travels as
``Authorization: Bearer <token>``, which JupyterHub accepts for its API tokens and the EOSC EU
Node's ``services/jwt`` accepts for the Check-in JWT. A hub is a name (``eosc`` is the EOSC EU
Node's ``services/jwt`` base, ``egi`` and ``[hubs.urls]`` names are hubs whose API is
``<url>/hub/api``), any JupyterHub URL, or an API base URL as it is. Requests go through
:class:`nbplugins.http.HttpClient` (retries, one token refresh on 401); a 403 is explained with
the token layer's diagnosis, and an address that answers like no JupyterHub says so in one line.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from nbplugins import config as config_mod
from nbplugins import secrets, tokens
from nbplugins.errors import AuthError, ServiceError, ValidationError
from nbplugins.http import HttpClient
from nbplugins.hub import hubs
from nbplugins.retry import Retry, poll

log = logging.getLogger(__name__)

API_TAILS = ("/hub/api", "/services/jwt")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def api_url(hub: str | None = None, cfg: config_mod.Config | None = None) -> str:
    """The REST API base of a hub name or URL (no trailing ``/``): ``eosc`` -> its ``services/jwt``."""
    cfg = cfg or config_mod.get()
    wanted = (hub or cfg.hubs.default or "").strip()
    if wanted.lower() == "eosc":  # the node's hub API for Check-in JWTs (``GET .../services/jwt/users``)
        return hubs.resolve("eosc", cfg).url + "services/jwt"
    if "://" in wanted and urllib.parse.urlsplit(wanted).path.rstrip("/").endswith(API_TAILS):
        return hubs.normalize_url(wanted).rstrip("/")  # an API base given as it is
    found = hubs.resolve(wanted or None, cfg)
    assert found.url is not None  # resolve() refuses a hub without an address
    return found.url + "hub/api"


def server_path(user: str, server: str = "") -> str:
    """The API path of a user's default server (``server=""``) or a named one."""
    quoted = urllib.parse.quote(user, safe="")
    return f"/users/{quoted}/servers/{urllib.parse.quote(server, safe='')}" if server else f"/users/{quoted}/server"


class HubApi:
    """One hub's REST API with one token provider."""

    def __init__(self, hub: str | None = None, *, token: str | tokens.TokenProvider | None = None,
                 retry: Retry | None = None, verify: bool | str = True, cfg: config_mod.Config | None = None) -> None:
        self.url = api_url(hub, cfg)
        self.provider: tokens.TokenProvider = (tokens.StaticToken(token, "explicit token") if isinstance(token, str)
                                               else token or tokens.default_resolver())
        self.service = f"JupyterHub API at {self.url}"
        self.client = HttpClient(self.url, service=self.service, token=self.provider, retry=retry, verify=verify)
        self._is_hub: bool | None = None

    # ----------------------------------------------------------------- raw requests

    def request(self, method: str, path: str, *, data: Any = None, allow: Iterable[int] = ()) -> Any:
        """``METHOD path`` under the API base; the JSON answer (None when empty).

        A 403 is explained with the token layer's diagnosis (after one token refresh when the
        hub does not know the token at all); a 404 or an answer that is not JSON from an
        address that is no JupyterHub says that.
        """
        method = method.upper()
        if method not in METHODS:
            raise ValidationError(f"HTTP method {method!r}: use one of {', '.join(METHODS)}")
        if "://" in path or path.startswith("//"):
            raise ValidationError(f"path {path!r}: give a path under the hub API (like /users), not a URL")
        kwargs: dict[str, Any] = {"allow": set(allow), "headers": {"Accept": "application/json"}}
        if data is not None:
            kwargs["json"] = data
        try:
            response = self._send(method, path, kwargs)
        except ServiceError as exc:
            if exc.status in (404, 405) and not self.is_jupyterhub():
                raise self._not_a_hub() from None
            raise
        if not response.content:
            return None
        try:
            body = response.json()
        except ValueError:
            if not self.is_jupyterhub():
                raise self._not_a_hub() from None
            raise ServiceError(f"{self.service}: {method} {path} answered HTTP {response.status_code} "
                               "with a body that is not JSON") from None
        if isinstance(body, dict) and isinstance(body.get("token"), str):
            secrets.register(body["token"], "JupyterHub API token")  # POST .../tokens answers a new one
        return body

    def _send(self, method: str, path: str, kwargs: dict[str, Any]) -> Any:
        try:
            return self.client.request(method, path, **kwargs)
        except ServiceError as exc:
            if exc.status != 403:
                raise
            if "invalid credentials" in str(exc).lower():  # JupyterHub's 401: it does not know the token
                log.info("%s does not know the token; refreshing it once", self.service)
                self.provider.get(force_refresh=True)
                try:
                    return self.client.request(method, path, **kwargs)
                except ServiceError as again:
                    if again.status != 403:
                        raise
                    exc = again
            raise self._refused(exc) from None

    def _refused(self, exc: ServiceError) -> AuthError:
        """A 403 in one line: what the hub said and why the token may not do it."""
        cfg = config_mod.get().token
        token = self.provider.get()
        reason = str(exc).rpartition("answered HTTP 403: ")[2] or "forbidden"
        why = tokens.diagnose(token, audience=cfg.audience, vo=cfg.required_vo)
        return AuthError(f"{self.service} refused the token from {token.source} (HTTP 403: {reason}): {why}")

    def is_jupyterhub(self) -> bool:
        """True when the API base answers like JupyterHub (``GET /`` gives its version); asked once."""
        if self._is_hub is None:
            probe = HttpClient(self.url, service=self.service, retry=self.client.retry.with_(error_budget=2),
                               verify=self.client.verify, session=self.client.session)  # no token: maybe no hub
            try:
                body = probe.request("GET", "/", allow=range(300, 600)).json()
                self._is_hub = isinstance(body, dict) and "version" in body
            except (ValueError, ServiceError):
                self._is_hub = False
        return self._is_hub

    def _not_a_hub(self) -> ValidationError:
        return ValidationError(f"{self.url} is not a JupyterHub API (its root does not answer with a JupyterHub "
                               "version); give the hub's address, a name (egi, eosc) or the API base ending in "
                               "/hub/api")

    # ----------------------------------------------------------------- the resources

    def whoami(self) -> dict[str, Any]:
        """The user (or service) the token belongs to (``GET /user``)."""
        return self.request("GET", "/user")

    def users(self) -> list[dict[str, Any]]:
        """Every user the token may list (``GET /users``)."""
        return self.request("GET", "/users") or []

    def user(self, name: str | None = None) -> dict[str, Any]:
        """One user's model with its servers; the token's own user when ``name`` is None."""
        if name is None:
            me = self.whoami()
            if me.get("kind") not in (None, "user"):
                raise ValidationError(f"the token belongs to the {me.get('kind')} {me.get('name')!r}, not a user: "
                                      "name the user")
            name = str(me.get("name"))
        return self.request("GET", f"/users/{urllib.parse.quote(name, safe='')}")

    def servers(self, user: str | None = None) -> dict[str, dict[str, Any]]:
        """A user's active servers by name (``""`` is the default server)."""
        return dict(self.user(user).get("servers") or {})

    def start(self, user: str | None = None, server: str = "", *, options: dict[str, Any] | None = None,
              wait: bool = True, timeout: float = 300.0,
              on_status: Callable[[dict[str, Any] | None], None] | None = None) -> dict[str, Any] | None:
        """Start a user's default or named server and wait until it is ready; its model."""
        name = user or str(self.user(None)["name"])
        try:
            self.request("POST", server_path(name, server), data=options or {})
        except ServiceError as exc:
            if exc.status != 400 or "already running" not in str(exc):
                raise
        if not wait:
            return self.servers(name).get(server)
        found = poll(lambda: self.servers(name).get(server), lambda s: s is None or bool(s.get("ready"))
                     or not s.get("pending"), what=f"{self.service}: start of {_label(name, server)}",
                     interval=0.5, max_interval=5.0, deadline=timeout, on_status=on_status)
        if not found or not found.get("ready"):
            raise ServiceError(f"{self.service}: {_label(name, server)} did not start (see the hub's spawn page "
                               "or logs)")
        return found

    def stop(self, user: str | None = None, server: str = "", *, wait: bool = True, timeout: float = 120.0) -> None:
        """Stop a user's default or named server and wait until it is gone."""
        name = user or str(self.user(None)["name"])
        self.request("DELETE", server_path(name, server))
        if wait:
            poll(lambda: self.servers(name).get(server), lambda s: s is None or bool(s.get("stopped")),
                 what=f"{self.service}: stop of {_label(name, server)}", interval=0.5, max_interval=5.0,
                 deadline=timeout)

    def tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        """A user's API tokens (their models; the values are never listed by JupyterHub)."""
        name = user or str(self.user(None)["name"])
        return (self.request("GET", f"/users/{urllib.parse.quote(name, safe='')}/tokens") or {}).get("api_tokens", [])

    def create_token(self, user: str | None = None, *, note: str | None = None, expires_in: int | None = None,
                     scopes: list[str] | None = None) -> dict[str, Any]:
        """A new API token for a user (its model with ``token``, registered as a secret)."""
        name = user or str(self.user(None)["name"])
        body: dict[str, Any] = {k: v for k, v in (("note", note), ("expires_in", expires_in), ("scopes", scopes))
                                if v is not None}
        return self.request("POST", f"/users/{urllib.parse.quote(name, safe='')}/tokens", data=body)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def __enter__(self) -> HubApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _label(user: str, server: str) -> str:
    return f"{user}'s server {server!r}" if server else f"{user}'s default server"


def parse_data(text: str | None) -> Any:
    """The ``--data`` of ``hub api``: JSON text, or None."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"--data is not JSON: {exc}") from None


def server_rows(models: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Table rows (user, server, state, url, last activity) for users' models with their servers."""
    rows = []
    for user, model in sorted(models.items()):
        for name, server in sorted((model.get("servers") or {}).items()):
            pending = server.get("pending")
            state = ("ready" if server.get("ready") else {"spawn": "starting", "stop": "stopping"}.get(pending, pending)
                     if pending else "stopped" if server.get("stopped") else "-")
            rows.append({"user": user, "server": name or "(default)", "state": state,
                         "url": str(server.get("url") or ""), "last activity": str(server.get("last_activity") or "")})
    return rows
