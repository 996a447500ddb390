"""What a token check shows, and why a service may have refused a token (expiry, issuer, audience, VO).

VOs come from the token's own entitlements or, when it carries none, from the issuer's
userinfo (:func:`nbplugins.tokens.issuer.identity`).
"""

from __future__ import annotations

from nbplugins.tokens.claims import Token, relative, when
from nbplugins.tokens.issuer import identity


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
