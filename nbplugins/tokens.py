"""The one token resolver: where the OIDC access token comes from, what it says, and refresh.

Sources are tried in a fixed order unless one is named: an explicit value, the environment
(``OIDC_ACCESS_TOKEN``, ``FEDCLOUD_OIDC_ACCESS_TOKEN``), ``$NBPLUGINS_TOKEN_FILE``, the EGI
Notebooks and EOSC EU Node secret files, oidc-agent, and a refresh-token grant. Files are
re-read on every use because the hubs rewrite them; the refresh grant refreshes ahead of
expiry. Every value found is registered with :mod:`nbplugins.secrets` before it is returned.
Claims are decoded without verification, for display and diagnosis only.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

import jwt

from nbplugins import config as config_mod
from nbplugins import secrets
from nbplugins.config import TokenConfig
from nbplugins.errors import NbpluginsError, TokenError, TokenExpiredError
from nbplugins.retry import Retry, describe

log = logging.getLogger(__name__)

EGI_TOKEN_FILE = "/var/run/secrets/egi.eu/access_token"
EOSC_TOKEN_FILE = "/var/run/secrets/oidc/access_token"
ENV_VARS = ("OIDC_ACCESS_TOKEN", "FEDCLOUD_OIDC_ACCESS_TOKEN")


# ----------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claims:
    """What a token says about itself (unverified): who, issued by whom, for whom, until when."""

    subject: str | None = None
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    expires_at: float | None = None
    issued_at: float | None = None
    vos: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_jwt(self) -> bool:
        return bool(self.raw)

    @property
    def has_entitlements(self) -> bool:
        """Whether the token carries ``eduperson_entitlement`` at all (EGI access tokens may not)."""
        return "eduperson_entitlement" in self.raw


def vos_from_entitlements(entitlements: Any) -> tuple[str, ...]:
    """VO names from ``eduperson_entitlement`` URNs (``urn:mace:egi.eu:group:VO[:sub]:role=...``)."""
    if isinstance(entitlements, str):
        entitlements = [entitlements]
    vos = set()
    for item in entitlements or ():
        if not isinstance(item, str) or ":group:" not in item:
            continue
        rest = item.split(":group:", 1)[1].split("#", 1)[0]
        vo = rest.split(":", 1)[0]
        if vo and not vo.startswith("role="):
            vos.add(vo)
    return tuple(sorted(vos))


def decode_claims(value: str, source: str = "token") -> Claims:
    """Decode a JWT's claims without verifying it; an opaque token gives empty claims.

    A value shaped like a JWT (three dot-separated parts) that does not decode is an error:
    it was cut short or mangled on the way.
    """
    if value.count(".") != 2:
        return Claims()
    try:
        raw = jwt.decode(value, options={"verify_signature": False, "verify_exp": False,
                                         "verify_aud": False, "verify_iat": False, "verify_nbf": False})
    except jwt.PyJWTError as exc:
        raise TokenError(f"{source}: malformed JWT ({type(exc).__name__}); the token is truncated or corrupted") from None
    aud = raw.get("aud") or ()
    aud = (aud,) if isinstance(aud, str) else tuple(str(a) for a in aud)
    exp = raw.get("exp")
    iat = raw.get("iat")
    return Claims(
        subject=raw.get("sub"),
        issuer=raw.get("iss"),
        audience=aud,
        expires_at=float(exp) if isinstance(exp, (int, float)) else None,
        issued_at=float(iat) if isinstance(iat, (int, float)) else None,
        vos=vos_from_entitlements(raw.get("eduperson_entitlement")),
        raw=raw,
    )


@dataclass(frozen=True)
class Token:
    """An access token with where it came from. ``str()`` never shows the value."""

    value: str = field(repr=False)
    source: str
    claims: Claims = field(default_factory=Claims)
    expires_at: float | None = None

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)

    def expired(self, margin: float = 0.0) -> bool:
        left = self.seconds_left()
        return left is not None and left <= margin

    def __str__(self) -> str:
        return f"<token from {self.source}>"


def make_token(value: str, source: str, expires_at: float | None = None) -> Token:
    """Build a :class:`Token`, registering the value as a secret first."""
    value = value.strip()
    secrets.register(value, source)
    claims = decode_claims(value, source)
    return Token(value=value, source=source, claims=claims,
                 expires_at=claims.expires_at if claims.expires_at is not None else expires_at)


def relative(seconds: float) -> str:
    """'in 5 min' / '3 h ago' for an offset in seconds."""
    ago = seconds < 0
    s = abs(seconds)
    if s < 90:
        text = f"{s:.0f} s"
    elif s < 90 * 60:
        text = f"{s / 60:.0f} min"
    elif s < 48 * 3600:
        text = f"{s / 3600:.1f} h"
    else:
        text = f"{s / 86400:.1f} days"
    return f"{text} ago" if ago else f"in {text}"


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ----------------------------------------------------------------------------- sources


class TokenSource:
    """One place a token can come from. ``fetch`` returns None when the source is absent."""

    name: ClassVar[str] = "source"
    refreshable: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        """The instances of this source that ``cfg`` and the environment make available."""
        return [cls()]

    def describe(self) -> str:
        return self.name

    def fetch(self, force_refresh: bool = False) -> Token | None:
        raise NotImplementedError


class ExplicitSource(TokenSource):
    name = "explicit"

    def __init__(self, value: str) -> None:
        self.value = value

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return []

    def describe(self) -> str:
        return "explicit value"

    def fetch(self, force_refresh: bool = False) -> Token | None:
        if not self.value.strip():
            raise TokenError("explicit value: the token is empty")
        return make_token(self.value, self.describe())


class EnvSource(TokenSource):
    name = "env"

    def __init__(self, var: str = ENV_VARS[0]) -> None:
        self.var = var

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(var) for var in ENV_VARS]

    def describe(self) -> str:
        return f"environment variable {self.var}"

    def fetch(self, force_refresh: bool = False) -> Token | None:
        value = os.environ.get(self.var)
        if value is None:
            return None
        if not value.strip():
            raise TokenError(f"{self.describe()}: is set but empty")
        return make_token(value, self.describe())


class FileSource(TokenSource):
    """A token file, re-read on every fetch (hubs rewrite it in place)."""

    name = "file"
    required = True

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(cfg.file)] if cfg.file else []

    def describe(self) -> str:
        return f"token file {self.path}"

    def fetch(self, force_refresh: bool = False) -> Token | None:
        if self.path is None:
            return None
        # a regular file of a few KiB only: a FIFO, /dev/zero or a huge file is refused at once
        text = secrets.read_secret_file(self.path, self.describe(), TokenError, missing_ok=not self.required)
        if text is None:
            return None
        if not text.strip():
            raise TokenError(f"{self.describe()}: is empty")
        return make_token(text, self.describe())


class EgiNotebooksSource(FileSource):
    """The file EGI Notebooks keeps fresh (an ``id_token`` sits beside it)."""

    name = "egi"
    required = False
    default_path: ClassVar[str] = EGI_TOKEN_FILE

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(cls.default_path)]

    def describe(self) -> str:
        return f"EGI Notebooks token file {self.path}"


class EoscNodeSource(EgiNotebooksSource):
    """The file the EOSC EU Node keeps fresh."""

    name = "eosc"
    default_path: ClassVar[str] = EOSC_TOKEN_FILE

    def describe(self) -> str:
        return f"EOSC EU Node token file {self.path}"


class OidcAgentSource(TokenSource):
    """oidc-agent, through liboidcagent or the ``oidc-token`` command.

    The agent keeps and refreshes the token: asked for one valid ``min_valid`` more seconds
    (an hour more when a refresh is forced), it refreshes when the one it holds is shorter.
    Its expiry comes with the answer, so an opaque token expires too. A missing, dead or
    restarted agent is one :class:`TokenError` line saying what to do.
    """

    name = "oidc-agent"
    refreshable = True

    def __init__(self, account: str, min_valid: float = 60.0) -> None:
        self.account = account
        self.min_valid = min_valid

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(cfg.oidc_agent_account, cfg.refresh_margin)] if cfg.oidc_agent_account else []

    def describe(self) -> str:
        return f"oidc-agent account {self.account!r}"

    def fetch(self, force_refresh: bool = False) -> Token | None:
        # the agent refreshes when its token is valid for less than min_valid_period seconds:
        # an hour more than the margin makes it refresh now
        min_valid = int(self.min_valid) + (3600 if force_refresh else 0)
        hint = f"start oidc-agent, set OIDC_SOCK to its socket and load the account with: oidc-add {self.account}"
        try:
            import liboidcagent
        except ImportError:
            liboidcagent = None
        expires_at: float | None = None
        if liboidcagent is not None:
            try:
                value, _, exp = liboidcagent.get_token_response(self.account, min_valid_period=min_valid,
                                                                application_hint="nbplugins")
            except liboidcagent.OidcAgentCryptError as exc:  # an answer cut short: the agent died mid-request
                raise TokenError(f"{self.describe()}: the agent stopped answering ({_one_line(exc)}); {hint}") from None
            except liboidcagent.OidcAgentError as exc:
                raise TokenError(f"{self.describe()}: {_one_line(exc)} ({hint})") from None
            except Exception as exc:  # liboidcagent lets a cut or garbled answer through unwrapped
                raise TokenError(f"{self.describe()}: the agent stopped answering ({describe(exc)}); {hint}") from None
            expires_at = float(exp) if isinstance(exp, (int, float)) and exp > 0 else None
        else:
            exe = shutil.which("oidc-token")
            if exe is None:
                raise TokenError(f"{self.describe()}: neither liboidcagent nor oidc-token is installed")
            try:
                proc = subprocess.run([exe, f"--time={min_valid}", self.account], capture_output=True,
                                      text=True, timeout=30, env={**os.environ, "LANG": "C"},
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise TokenError(f"{self.describe()}: oidc-token did not answer within 30 s ({hint})") from None
            if proc.returncode != 0:
                raise TokenError(f"{self.describe()}: oidc-token failed: {_one_line(proc.stderr)[:200]} ({hint})")
            value = proc.stdout
        if not value or not value.strip():
            raise TokenError(f"{self.describe()}: the agent returned no token")
        return make_token(value, self.describe(), expires_at=expires_at)


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "no message"


class RefreshGrantSource(TokenSource):
    """A refresh-token grant against the issuer's token endpoint, refreshed ahead of expiry.

    Access tokens are cached per (endpoint, client, refresh token) for the process and
    replaced ``refresh_margin`` seconds before they expire; a rotated refresh token replaces
    the old one in memory.
    """

    name = "refresh"
    refreshable = True
    _cache: ClassVar[dict[tuple[str, str, str], dict[str, Any]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, cfg: TokenConfig) -> None:
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(cfg)] if cfg.refresh_token and cfg.client_id else []

    def describe(self) -> str:
        return f"refresh grant at {self.cfg.token_endpoint or self.cfg.issuer}"

    def _retry(self) -> Retry:
        return _issuer_retry(self.cfg.timeout)

    def token_endpoint(self) -> str:
        """The configured token endpoint, or the one the issuer's discovery document names."""
        if self.cfg.token_endpoint:
            return self.cfg.token_endpoint
        try:
            endpoint = discovery(self.cfg.issuer, timeout=self.cfg.timeout).get("token_endpoint")
        except TokenError as exc:
            raise TokenError(f"{self.describe()}: {exc}") from None
        if not isinstance(endpoint, str) or not endpoint:
            raise TokenError(f"{self.describe()}: the issuer's discovery document is not OpenID Connect metadata")
        return endpoint

    def fetch(self, force_refresh: bool = False) -> Token | None:
        endpoint = self.token_endpoint()
        key = (endpoint, self.cfg.client_id or "", self.cfg.refresh_token or "")
        with self._lock:
            entry = self._cache.get(key)
            if entry and not force_refresh and entry["expires_at"] - self.cfg.refresh_margin > time.time():
                return entry["token"]
            refresh_token = entry["refresh_token"] if entry else self.cfg.refresh_token
            response = self._grant(endpoint, refresh_token)
            value = response.get("access_token")
            if not isinstance(value, str) or not value:
                raise TokenError(f"{self.describe()}: the issuer answered without an access_token")
            new_refresh = response.get("refresh_token") or refresh_token
            secrets.register(new_refresh, "refresh token")
            expires_in = response.get("expires_in")
            fallback = time.time() + float(expires_in) if isinstance(expires_in, (int, float)) else None
            token = make_token(value, self.describe(), expires_at=fallback)
            # authlib and we both need an expiry, or nothing refreshes: JWT exp first, else expires_in
            expires_at = token.expires_at if token.expires_at is not None else time.time() + 3600
            self._cache[key] = {"token": token, "refresh_token": new_refresh, "expires_at": expires_at}
            log.info("refreshed access token from %s (valid %s)", self.describe(), relative(expires_at - time.time()))
            return token

    def _grant(self, endpoint: str, refresh_token: str | None) -> dict[str, Any]:
        from authlib.integrations.base_client.errors import OAuthError
        from authlib.integrations.requests_client import OAuth2Session

        # no scope: a refresh grant keeps the scopes of the original grant (RFC 6749 §6)
        session = OAuth2Session(self.cfg.client_id, self.cfg.client_secret)

        def call() -> dict[str, Any]:
            return dict(session.refresh_token(endpoint, refresh_token=refresh_token, timeout=self.cfg.timeout))

        try:
            return self._retry().call(call, what=f"refresh grant at {endpoint}")
        except OAuthError as exc:
            reason = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
            hint = " (the refresh token was revoked or has expired: get a new one)" if exc.error == "invalid_grant" else ""
            raise TokenError(f"{self.describe()}: the issuer refused the grant ({reason}){hint}") from None
        except ValueError:
            raise TokenError(f"{self.describe()}: the issuer answered something that is not a token response") from None
        except NbpluginsError as exc:
            raise TokenError(f"{self.describe()}: cannot reach the issuer ({exc})") from None
        except Exception as exc:
            raise TokenError(f"{self.describe()}: cannot reach the issuer ({describe(exc)})") from None
        finally:
            session.close()


# ----------------------------------------------------------------------------- registry

SOURCES: dict[str, type[TokenSource]] = {}


def register_source(cls: type[TokenSource]) -> type[TokenSource]:
    """Add a token source class under ``cls.name`` (also how entry points plug in)."""
    SOURCES[cls.name] = cls
    return cls


for _cls in (EnvSource, FileSource, EgiNotebooksSource, EoscNodeSource, OidcAgentSource, RefreshGrantSource):
    register_source(_cls)


def register_entry_points() -> None:
    """Load token sources other packages register in the ``nbplugins.token_sources`` group."""
    for ep in entry_points(group="nbplugins.token_sources"):
        if ep.name not in SOURCES:
            register_source(ep.load())


def source_names() -> list[str]:
    return list(SOURCES)


# ----------------------------------------------------------------------------- resolver


class TokenProvider(Protocol):
    """What HTTP clients need: a token now, or a fresh one after a 401."""

    def get(self, force_refresh: bool = False) -> Token: ...


class TokenResolver:
    """Finds the token: the first source in order that has one, or only the named source."""

    def __init__(self, cfg: TokenConfig | None = None, *, explicit: str | None = None,
                 source: str | None = None) -> None:
        self.cfg = cfg if cfg is not None else config_mod.get().token
        self.explicit = explicit
        self.source = source if source is not None else self.cfg.source

    def sources(self) -> list[TokenSource]:
        if self.explicit is not None:
            return [ExplicitSource(self.explicit)]
        if self.source:
            cls = SOURCES.get(self.source)
            if cls is None:
                register_entry_points()
                cls = SOURCES.get(self.source)
            if cls is None:
                raise TokenError(f"unknown token source {self.source!r} (known: {', '.join(SOURCES)})")
            found = cls.from_config(self.cfg)
            if not found:
                raise TokenError(f"token source {self.source!r} is not configured: {_needs(self.source)}")
            return found
        return [src for cls in SOURCES.values() for src in cls.from_config(self.cfg)]

    def get(self, force_refresh: bool = False) -> Token:
        """The first valid token; expired ones are skipped, refreshable ones refreshed."""
        expired: list[Token] = []
        looked: list[str] = []
        for src in self.sources():
            looked.append(src.describe())
            token = src.fetch(force_refresh=force_refresh and src.refreshable)
            if token is None:
                continue
            if token.expired() and src.refreshable and not force_refresh:
                token = src.fetch(force_refresh=True)
            if token is None:
                continue
            if token.expired():
                log.info("skipping expired token from %s", token.source)
                expired.append(token)
                continue
            return token
        if expired:
            first = expired[0]
            raise TokenExpiredError(
                f"{first.source}: the token expired {relative(first.seconds_left() or 0)} "
                f"(at {when(first.expires_at or 0)}); get a fresh one"
            )
        raise _none_found(looked)

    def inspect(self) -> Token:
        """The first token found, expired or not (for ``token check``)."""
        looked = []
        for src in self.sources():
            looked.append(src.describe())
            token = src.fetch()
            if token is not None:
                return token
        raise _none_found(looked)


def _none_found(looked: list[str]) -> TokenError:
    return TokenError("no token found; looked at " + ", ".join(looked)
                      + ". Set OIDC_ACCESS_TOKEN, NBPLUGINS_TOKEN_FILE, or a refresh grant in the config")


def _needs(name: str) -> str:
    return {
        "file": "set NBPLUGINS_TOKEN_FILE or [token] file",
        "oidc-agent": "set OIDC_AGENT_ACCOUNT or [token] oidc_agent_account",
        "refresh": "set client_id and refresh_token in [token] (or NBPLUGINS_OIDC_CLIENT_ID and NBPLUGINS_OIDC_REFRESH_TOKEN)",
    }.get(name, "see the [token] section of the config")


class StaticToken:
    """A fixed token (for example a Onedata access token given directly)."""

    def __init__(self, value: str, source: str = "explicit value") -> None:
        self.token = make_token(value, source)

    def get(self, force_refresh: bool = False) -> Token:
        return self.token


_default: tuple[int, TokenResolver] | None = None


def default_resolver() -> TokenResolver:
    """The resolver for the current config (rebuilt when the config changes)."""
    global _default
    cfg = config_mod.get()
    if _default is None or _default[0] != id(cfg):
        _default = (id(cfg), TokenResolver(cfg.token))
    return _default[1]


def current(force_refresh: bool = False) -> str:
    """A valid access token now, for code in notebooks: ``nbplugins.tokens.current()``."""
    return default_resolver().get(force_refresh=force_refresh).value


# ----------------------------------------------------------------------------- the issuer: discovery, userinfo

_discovered: dict[str, dict[str, Any]] = {}


def _issuer_retry(timeout: float) -> Retry:
    return Retry(deadline=max(timeout * 2, 5.0), initial=0.3, cap=3.0, error_budget=3)


def _issuer_get(url: str, what: str, timeout: float, headers: dict[str, str] | None = None) -> Any:
    """GET a JSON document from the issuer through the shared retry; TokenError says what went wrong."""
    import requests

    def fetch() -> Any:
        response = requests.get(url, headers=headers, timeout=timeout)
        if response.status_code >= 500:
            response.raise_for_status()
        if response.status_code != 200:
            raise TokenError(f"{what} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise TokenError(f"{what} did not answer JSON") from None

    try:
        return _issuer_retry(timeout).call(fetch, what=what)
    except TokenError:
        raise
    except NbpluginsError as exc:
        raise TokenError(f"cannot reach the issuer ({exc})") from None
    except Exception as exc:
        raise TokenError(f"cannot reach the issuer ({describe(exc)})") from None


def discovery(issuer: str, *, timeout: float = 15.0) -> dict[str, Any]:
    """The issuer's OpenID Connect metadata (``/.well-known/openid-configuration``), fetched once per process."""
    issuer = issuer.rstrip("/")
    if issuer not in _discovered:
        meta = _issuer_get(f"{issuer}/.well-known/openid-configuration", "discovery document", timeout)
        if not isinstance(meta, dict) or not any(k in meta for k in ("token_endpoint", "userinfo_endpoint")):
            raise TokenError("the issuer's discovery document is not OpenID Connect metadata")
        _discovered[issuer] = meta
    return _discovered[issuer]


def userinfo(token: Token, cfg: TokenConfig | None = None) -> dict[str, Any]:
    """What the issuer says about the token's user (subject, ``eduperson_entitlement``...).

    An opaque token, or an EGI Check-in access token without entitlements, says nothing of
    its VOs; the issuer's userinfo endpoint does.
    """
    cfg = cfg or config_mod.get().token
    issuer = (token.claims.issuer or cfg.issuer).rstrip("/")
    endpoint = discovery(issuer, timeout=cfg.timeout).get("userinfo_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise TokenError(f"{issuer} publishes no userinfo endpoint")
    info = _issuer_get(endpoint, f"the userinfo endpoint of {issuer}", cfg.timeout,
                       headers={"Authorization": f"Bearer {token.value}"})
    if not isinstance(info, dict):
        raise TokenError(f"the userinfo endpoint of {issuer} did not answer an object")
    return info


@dataclass(frozen=True)
class Identity:
    """Who a token is for and its VOs, and where that was read (``origin``), or why it is unknown."""

    subject: str | None
    vos: tuple[str, ...] | None
    origin: str


def identity(token: Token, cfg: TokenConfig | None = None) -> Identity:
    """The token's subject and VOs: from its own claims when it has entitlements, else from userinfo."""
    claims = token.claims
    if claims.is_jwt and claims.has_entitlements:
        return Identity(claims.subject, claims.vos, "the token")
    if token.expired():
        return Identity(claims.subject, None, "unknown: the token expired")
    try:
        info = userinfo(token, cfg)
    except TokenError as exc:
        return Identity(claims.subject, None, f"unknown: {exc}")
    subject = info.get("sub") if isinstance(info.get("sub"), str) else claims.subject
    return Identity(subject, vos_from_entitlements(info.get("eduperson_entitlement")), "the issuer's userinfo")


def summary(token: Token) -> list[tuple[str, str]]:
    """What ``token check`` shows: source, subject, issuer, audience, expiry, VOs and where they were read."""
    claims = token.claims
    who = identity(token)
    rows = [("source", token.source)]
    if not claims.is_jwt:
        rows.append(("format", "opaque (not a JWT)"))
    rows.append(("subject", who.subject or "-"))
    if claims.is_jwt:
        rows += [("issuer", claims.issuer or "-"), ("audience", ", ".join(claims.audience) or "-")]
    expires_at = token.expires_at
    rows.append(("expires", f"{when(expires_at)} ({relative(token.seconds_left() or 0)})"
                 if expires_at is not None else "unknown"))
    if who.vos is None:
        rows.append(("VOs", who.origin))
    else:
        rows.append(("VOs", (", ".join(who.vos) or "none")
                     + ("" if who.origin == "the token" else f" (from {who.origin})")))
    return rows


# ----------------------------------------------------------------------------- diagnosis


def diagnose(token: Token, *, issuer: str | None = None, audience: str | None = None,
             vo: str | None = None) -> str:
    """Why a service might refuse ``token``: expiry, issuer, audience or VO.

    The claims say most of it; VOs come from the issuer's userinfo when the token does not
    carry entitlements (opaque tokens, some EGI Check-in access tokens).
    """
    claims = token.claims
    if token.expired():
        return f"the token expired {relative(token.seconds_left() or 0)}"
    missing_vo = _missing_vo(token, vo)
    if not claims.is_jwt:
        return missing_vo or "the token is opaque, so its expiry and audience cannot be checked here"
    if issuer and claims.issuer and claims.issuer.rstrip("/") != issuer.rstrip("/"):
        return f"the token was issued by {claims.issuer}, the service expects {issuer}"
    if audience and claims.audience and audience not in claims.audience:
        return f"the token's audience is {', '.join(claims.audience)}, the service expects {audience}"
    return missing_vo or "the token is unexpired with matching claims; the service rejects this identity (rights or VO)"


def _missing_vo(token: Token, vo: str | None) -> str | None:
    if not vo:
        return None
    who = identity(token)
    if who.vos is None or vo in who.vos:
        return None
    has = ", ".join(who.vos) or "none"
    if who.origin == "the token":
        return f"the token carries no membership of VO {vo} (it has: {has})"
    return f"{who.origin} shows no membership of VO {vo} (it has: {has})"


def with_token_retry(call: Callable[[Token], Any], provider: TokenProvider, *,
                     unauthorized: Callable[[Any], bool], service: str,
                     cfg: TokenConfig | None = None) -> Any:
    """Run ``call(token)``; if ``unauthorized(result)``, force one refresh and try once more.

    A second refusal raises :class:`~nbplugins.errors.AuthError` saying why the token was
    likely refused (expired, audience, issuer or VO).
    """
    from nbplugins.errors import AuthError

    token = provider.get()
    result = call(token)
    if not unauthorized(result):
        return result
    log.info("%s refused the token from %s; refreshing once", service, token.source)
    token = provider.get(force_refresh=True)
    result = call(token)
    if not unauthorized(result):
        return result
    cfg = cfg or config_mod.get().token
    reason = diagnose(token, issuer=None, audience=cfg.audience, vo=cfg.required_vo)
    raise AuthError(f"{service} refused the token from {token.source} twice (HTTP 401): {reason}")
