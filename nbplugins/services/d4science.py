"""The D4Science hub's environment: the VRE token, its context, DataMiner's address, and how the
token is sent.

D4Science's JupyterHub puts ``D4SCIENCE_TOKEN`` (also ``GCUBE_TOKEN``), ``D4SCIENCE_CONTEXT``
(also ``GCUBE_CONTEXT``) and ``DATAMINER_URL`` into every user server; ``[d4science]`` in the
config file says the same for other machines (:class:`nbplugins.config.D4ScienceConfig`).
The token is a short-lived JWT for the VRE, sent as ``Authorization: Bearer``, or on older
setups an opaque gcube token, sent as the ``gcube-token`` header. The hub does not refresh it
inside the server, so an expired one is refused here, before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from nbplugins import config as config_mod
from nbplugins.errors import ConfigError, TokenError, TokenExpiredError
from nbplugins.tokens import Token, make_token

SOURCE = "D4SCIENCE_TOKEN"
EXPIRED = "the D4Science token has expired: reopen the VRE, or configure a refresh"


def is_jwt(token: Token) -> bool:
    """Whether the token is a JWT (Bearer) rather than a legacy gcube token (``gcube-token``)."""
    return token.claims.is_jwt


def auth_header(token: Token) -> tuple[str, str]:
    """The header name and value prefix the token travels with: ``Authorization: Bearer`` or ``gcube-token``."""
    return ("Authorization", "Bearer ") if is_jwt(token) else ("gcube-token", "")


def headers_for(token: Token) -> dict[str, str]:
    """The request headers that carry ``token`` (for result downloads from trusted hosts)."""
    name, prefix = auth_header(token)
    return {name: f"{prefix}{token.value}"}


class HubToken:
    """The VRE token as a :class:`~nbplugins.tokens.TokenProvider`: checked for expiry on every use.

    The hub never refreshes it inside a server, so a forced refresh returns the same token (a
    second refusal then says why); an expired token is an error saying what to do.
    """

    def __init__(self, value: str | None = None) -> None:
        self.explicit = value
        self._token: Token | None = None

    def _read(self) -> Token:
        value = self.explicit or config_mod.get().d4science.token
        if not value or not value.strip():
            raise TokenError("no D4Science token: set D4SCIENCE_TOKEN (or GCUBE_TOKEN), or [d4science] token "
                             "in the config; on the D4Science hub, reopen the VRE")
        if self._token is None or self._token.value != value.strip():
            self._token = make_token(value, SOURCE)
        return self._token

    def get(self, force_refresh: bool = False) -> Token:
        """The token; :class:`TokenExpiredError` with what to do when it has expired."""
        token = self._read()
        if token.expired():
            raise TokenExpiredError(EXPIRED)
        return token


@dataclass(frozen=True)
class Hub:
    """What the hub (or the ``[d4science]`` section) says: endpoints, context, token, trust."""

    dataminer_url: str | None
    context: str | None
    token_endpoint: str
    trusted_hosts: tuple[str, ...]
    verify: bool
    timeout: float
    has_token: bool

    def require_dataminer(self, url: str | None = None) -> str:
        """DataMiner's WPS endpoint: ``url``, else ``DATAMINER_URL`` or ``[d4science] dataminer_url``."""
        found = url or self.dataminer_url
        if not found:
            raise ConfigError("no DataMiner endpoint: set DATAMINER_URL, [d4science] dataminer_url, or pass --url")
        check_http_url(found, "DataMiner endpoint")
        return found

    def require_context(self, context: str | None = None) -> str:
        """The VRE context (UMA audience): ``context``, else ``D4SCIENCE_CONTEXT`` or ``[d4science] context``."""
        found = context or self.context
        if not found:
            raise ConfigError("no D4Science context for the UMA token: set D4SCIENCE_CONTEXT, [d4science] context "
                              "or [processes.NAME] context (e.g. /d4science.research-infrastructures.eu/D4OS/MyVRE)")
        return found


def hub() -> Hub:
    """The D4Science settings from the environment and the config file."""
    cfg = config_mod.get().d4science
    return Hub(dataminer_url=cfg.dataminer_url, context=cfg.context, token_endpoint=cfg.token_endpoint,
               trusted_hosts=tuple(cfg.trusted_hosts), verify=cfg.verify, timeout=cfg.timeout,
               has_token=bool(cfg.token))


def check_http_url(url: str, what: str) -> str:
    """``url`` if it is an absolute http(s) URL without credentials in it; a clear error otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ConfigError(f"{what}: put credentials in the token settings, not in the URL")
    return url


def trusted_hosts(url: str, extra: tuple[str, ...] | list[str] = ()) -> set[str]:
    """The hosts that may receive the token with result links: the service's own plus configured ones."""
    return {(urlsplit(url).hostname or "").lower(), *(h.lower() for h in extra)} - {""}


class AccessToken:
    """The access token a UMA grant starts from: the D4Science token, else the token layer's.

    On the hub the VRE token is the one Keycloak knows; elsewhere the token layer (a refresh
    grant, a token file) provides it and refreshes it after a refusal.
    """

    def __init__(self, explicit: str | None = None) -> None:
        self.hub = HubToken(explicit)
        self.explicit = explicit

    def get(self, force_refresh: bool = False) -> Token:
        if self.explicit or config_mod.get().d4science.token:
            try:
                return self.hub.get(force_refresh)
            except TokenExpiredError:
                if self.explicit:
                    raise
                expired = True
        else:
            expired = False
        from nbplugins.tokens import default_resolver

        try:
            return default_resolver().get(force_refresh=force_refresh)
        except TokenError:
            if expired:
                raise TokenExpiredError(EXPIRED) from None
            raise

