"""The UMA grant D4Science's CCP needs: an access token exchanged for a token for one VRE context.

``POST <token endpoint>`` with ``grant_type=urn:ietf:params:oauth:grant-type:uma-ticket`` and
``audience=<context>``, authenticated with ``Authorization: Bearer <access token>``. The UMA
token is cached until shortly before it expires; a service's 401 forces a new grant through
the token layer's refresh-once-and-retry (:class:`UmaToken` is a
:class:`~nbplugins.tokens.TokenProvider`), and a refusal of the access token itself forces a
fresh access token the same way.
"""

from __future__ import annotations

import threading
import time

from nbplugins.errors import AuthError, ServiceError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry
from nbplugins.tokens import Token, TokenProvider, make_token

GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
MARGIN = 30.0  # seconds before expiry that a cached UMA token is renewed


class UmaToken:
    """A UMA token for ``audience`` (the VRE context), obtained with the access token of ``access``."""

    def __init__(self, token_endpoint: str, audience: str, access: TokenProvider, *, verify: bool | str = True,
                 retry: Retry | None = None) -> None:
        self.audience = audience
        self.http = HttpClient(token_endpoint, service="UMA token endpoint", token=access, verify=verify,
                               retry=retry or Retry(deadline=60.0))
        self._token: Token | None = None
        self._lock = threading.Lock()
        self.grants = 0  # how many grants were asked for (for diagnosis and tests)

    def get(self, force_refresh: bool = False) -> Token:
        """The cached UMA token while it is valid; a new grant when forced or near expiry."""
        with self._lock:
            if force_refresh or self._token is None or self._token.expired(MARGIN):
                self._token = self._grant()
            return self._token

    def _grant(self) -> Token:
        self.grants += 1
        try:
            response = self.http.post("", data={"grant_type": GRANT, "audience": self.audience},
                                      headers={"Accept": "application/json"})
        except AuthError as exc:
            raise AuthError(f"the UMA grant for {self.audience} was refused: {exc}") from None
        except ServiceError as exc:
            if exc.status in (400, 403):
                raise AuthError(f"the UMA grant for {self.audience} was refused (HTTP {exc.status}): the access "
                                f"token has no access to this context; check the context name ({exc})") from None
            raise
        try:
            body = response.json()
            value = body["access_token"]
        except (ValueError, KeyError, TypeError):
            raise ServiceError("UMA token endpoint: the answer holds no access_token") from None
        expires_in = body.get("expires_in")
        expires_at = time.time() + float(expires_in) if isinstance(expires_in, (int, float)) else None
        return make_token(str(value), f"UMA token for {self.audience}", expires_at=expires_at)
