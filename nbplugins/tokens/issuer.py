"""The issuer: its OpenID Connect discovery document (once per process), userinfo, and who a token is for.

Every call to the issuer goes through one retry policy (:func:`issuer_retry`) and one error
mapper (:func:`unreachable`), so a refused, silent or garbled issuer is one :class:`TokenError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbplugins import config as config_mod
from nbplugins.config import TokenConfig
from nbplugins.errors import TokenError
from nbplugins.retry import ErrorMapper, Retry, describe
from nbplugins.tokens.claims import Token, entitlements_of, vos_from_entitlements

_discovered: dict[str, dict[str, Any]] = {}


def issuer_retry(timeout: float) -> Retry:
    """The retry policy of every call to the issuer: short, since a person or a kernel waits."""
    return Retry(deadline=max(timeout * 2, 5.0), initial=0.3, cap=3.0, error_budget=3)


def unreachable(source: str | None = None) -> ErrorMapper:
    """Error mapper for calls to the issuer: a TokenError goes up as it is, any other error
    says the issuer cannot be reached (prefixed with ``source`` when given)."""
    prefix = f"{source}: " if source else ""

    def mapper(exc: Exception) -> TokenError | None:
        if isinstance(exc, TokenError):
            return None
        return TokenError(f"{prefix}cannot reach the issuer ({describe(exc)})")

    return mapper


def _issuer_get(url: str, what: str, timeout: float, headers: dict[str, str] | None = None) -> Any:
    """GET a JSON document from the issuer through the shared retry; TokenError says what went wrong."""
    import requests  # not at the top: a notebook asking for its token should not wait for requests

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

    return issuer_retry(timeout).call(fetch, what=what, map_error=unreachable())


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
    return Identity(subject, vos_from_entitlements(entitlements_of(info)), "the issuer's userinfo")
