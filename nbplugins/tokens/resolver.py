"""The one token resolver: the first source in order that has a valid token, or only the named one.

Expired tokens are skipped and refreshable sources refreshed; :func:`with_token_retry` is the
401 protocol every HTTP client follows (one forced refresh, then a diagnosis), and
:func:`current` is what code in notebooks calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from nbplugins import config as config_mod
from nbplugins.config import TokenConfig
from nbplugins.errors import AuthError, TokenError, TokenExpiredError
from nbplugins.tokens.claims import Token, make_token, relative, when
from nbplugins.tokens.diagnosis import diagnose
from nbplugins.tokens.sources import SOURCES, ExplicitSource, TokenSource, register_entry_points

log = logging.getLogger(__name__)


class TokenProvider(Protocol):
    """What HTTP clients need: a token now, or a fresh one after a 401."""

    def get(self, force_refresh: bool = False) -> Token:
        """A valid token; a new one when ``force_refresh`` (after the service refused the last)."""
        ...


class TokenResolver:
    """Finds the token: the first source in order that has one, or only the named source."""

    def __init__(self, cfg: TokenConfig | None = None, *, explicit: str | None = None,
                 source: str | None = None) -> None:
        self.cfg = cfg if cfg is not None else config_mod.get().token
        self.explicit = explicit
        self.source = source if source is not None else self.cfg.source

    def sources(self) -> list[TokenSource]:
        """The sources to try, in order: the explicit value, the named source, or every configured one."""
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
        """The fixed token: there is nothing to refresh."""
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


def with_token_retry(call: Callable[[Token], Any], provider: TokenProvider, *,
                     unauthorized: Callable[[Any], bool], service: str,
                     cfg: TokenConfig | None = None) -> Any:
    """Run ``call(token)``; if ``unauthorized(result)``, force one refresh and try once more.

    A second refusal raises :class:`~nbplugins.errors.AuthError` saying why the token was
    likely refused (expired, audience, issuer or VO).
    """
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
