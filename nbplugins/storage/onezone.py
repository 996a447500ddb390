"""Onezone, the Onedata zone service: Onedata tokens (given, or minted from the EGI Check-in token) and
which Oneprovider serves a space. The filesystem (:mod:`nbplugins.storage.onedata`) asks here.

Tokens, first found wins: a given Onedata token, or a temporary one minted at Onezone from
the Check-in token :mod:`nbplugins.tokens` resolves (``X-Auth-Token: <idp>:<token>``), minted
again when it nears its end or the provider refuses it. The hubs' ``ONECLIENT_ACCESS_TOKEN``
is limited to oneclient and refused by the REST API: it is never used, and errors say so.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from nbplugins import secrets
from nbplugins.errors import AuthError, ServiceError, StorageError, TokenError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry
from nbplugins.tokens import Token, TokenResolver, default_resolver, make_token

log = logging.getLogger(__name__)

ONECLIENT_VAR = "ONECLIENT_ACCESS_TOKEN"
ONECLIENT_HELP = (
    "ONECLIENT_ACCESS_TOKEN is a oneclient-only token (the hub's FUSE mount) and the Oneprovider "
    "REST API refuses it; set ONEDATA_TOKEN to an access token from the Onezone web UI, or make an "
    "EGI Check-in token available (OIDC_ACCESS_TOKEN, the hub's token file, oidc-agent) so "
    "nbplugins mints one at Onezone"
)


def base_url(host: str) -> str:
    """``https://host`` for a bare host name; a URL with a scheme as it is (no trailing ``/``)."""
    host = host.strip().rstrip("/")
    return host if host.startswith(("https://", "http://")) else f"https://{host}"


class OnezoneRefused(AuthError):
    """Onezone refused the Check-in token, so no Onedata token could be minted."""


class OnedataToken:
    """Token provider: a given Onedata token, or one minted at Onezone from the Check-in token."""

    def __init__(self, *, token: str | None, zone: str, verify: bool | str, retry: Retry,
                 ttl: int, idp: str, resolver: TokenResolver | None = None, source: str = "") -> None:
        self.given = token.strip() if token else None
        self.source = source
        self.zone = base_url(zone)
        self.verify = verify
        self.retry = retry
        self.ttl = ttl
        self.idp = idp
        self.resolver = resolver
        self.lock = threading.Lock()
        self.minted: Token | None = None
        self.static: Token | None = None
        if self.given:
            self.static = make_token(self.given, source)
            oneclient = os.environ.get(ONECLIENT_VAR)
            if oneclient and oneclient.strip() == self.given:
                raise TokenError(f"Onedata: the token given ({source}) is the hub's {ONECLIENT_HELP}")

    def get(self, force_refresh: bool = False) -> Token:
        """The token to send: the given one, or a minted one still valid for a minute (minted anew if forced)."""
        if self.static is not None:
            secrets.register(self.static.value, self.source)  # the scrubber may have been cleared
            return self.static
        with self.lock:
            fresh = self.minted is not None and not self.minted.expired(margin=60)
            if fresh and not force_refresh:
                secrets.register(self.minted.value, self.minted.source)
                return self.minted
            self.minted = self._mint()
            return self.minted

    def _mint(self) -> Token:
        resolver = self.resolver or default_resolver()
        try:
            checkin = resolver.get()
        except TokenError as exc:
            if os.environ.get(ONECLIENT_VAR):
                secrets.register(os.environ[ONECLIENT_VAR], ONECLIENT_VAR)
                raise TokenError(f"Onedata: no usable token: {ONECLIENT_HELP}") from None
            raise TokenError(
                "Onedata: no token: set ONEDATA_TOKEN (or the 'token' storage option) to a Onedata "
                f"access token, or provide a Check-in token to mint one at {self.zone} ({exc})"
            ) from None
        client = HttpClient(f"{self.zone}/api/v3/onezone", service=f"Onezone {self.zone}",
                            token=resolver, header="X-Auth-Token", scheme=f"{self.idp}:",
                            retry=self.retry, verify=self.verify, timeout=(10.0, 60.0))
        until = int(time.time()) + self.ttl
        try:
            response = client.post("user/tokens/temporary", verify=self.verify, json={
                "type": {"accessToken": {}}, "caveats": [{"type": "time", "validUntil": until}]})
        except AuthError as exc:
            raise OnezoneRefused(f"Onedata: Onezone {self.zone} refused the Check-in token from "
                                 f"{checkin.source}, so no Onedata token could be minted ({exc})") from None
        finally:
            client.close()
        value = response.json().get("token")
        if not value:
            raise ServiceError(f"Onedata: Onezone {self.zone} minted no token (answer had no 'token')")
        log.info("minted a Onedata token at %s from %s, valid %d s", self.zone, checkin.source, self.ttl)
        return make_token(value, f"Onedata token minted at Onezone from {checkin.source}", expires_at=until)


def find_provider(tokens: OnedataToken, space: str, *, retry: Retry, verify: bool | str,
                  timeout: tuple[float, float]) -> str:
    """The base URL of an online Oneprovider supporting ``space`` (``name`` or ``name@spaceId``), from
    Onezone's view of the token."""
    name = space.split("@", 1)[0]
    zone = HttpClient(f"{tokens.zone}/api/v3/onezone", service=f"Onezone {tokens.zone}", retry=retry,
                      verify=verify, timeout=timeout)
    try:
        scope = zone.post("tokens/infer_access_token_scope", verify=verify, json={"token": tokens.get().value}).json()
    finally:
        zone.close()
    access = scope.get("dataAccessScope") or {}
    spaces = access.get("spaces") or {}
    for sid, details in spaces.items():
        if details.get("name") == name or space == f"{details.get('name')}@{sid}":
            for pid in details.get("supports") or {}:
                provider = (access.get("providers") or {}).get(pid) or {}
                if provider.get("online") and provider.get("domain"):
                    return base_url(provider["domain"])
            raise StorageError(f"Onedata: no online Oneprovider supports space {name!r}; set ONEDATA_PROVIDER")
    visible = ", ".join(sorted(d.get("name", "?") for d in spaces.values())) or "none"
    raise StorageError(f"Onedata: space {name!r} is not visible with this token at {tokens.zone} (spaces: {visible})")
