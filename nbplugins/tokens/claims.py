"""What a token says about itself: claims decoded without verification, for display and diagnosis.

:func:`make_token` is where every token value is registered with the scrubber before anything
else sees it; :class:`Token` never shows its value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from nbplugins import secrets
from nbplugins.errors import TokenError


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
        """Whether the token decoded as a JWT (an opaque token says nothing of itself)."""
        return bool(self.raw)

    @property
    def has_entitlements(self) -> bool:
        """Whether the token carries entitlements at all (EGI access tokens may not)."""
        return any(name in self.raw for name in ENTITLEMENT_CLAIMS)


#: Claims that carry EGI group entitlements: Check-in's name, and the one OSCAR and others also read.
ENTITLEMENT_CLAIMS = ("eduperson_entitlement", "entitlements")


def entitlements_of(claims: dict[str, Any]) -> list[Any]:
    """Every entitlement a token or userinfo answer carries, under either claim name."""
    found: list[Any] = []
    for name in ENTITLEMENT_CLAIMS:
        value = claims.get(name)
        found.extend([value] if isinstance(value, str) else value or [])
    return found


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
        vos=vos_from_entitlements(entitlements_of(raw)),
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
        """Seconds until expiry (negative once expired), or None when the expiry is unknown."""
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)

    def expired(self, margin: float = 0.0) -> bool:
        """Whether the token expires within ``margin`` seconds; an unknown expiry never does."""
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
    """An epoch time as a UTC date and time, for messages."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
