"""The one HTTP client every remote-service module uses (Onedata, OSCAR, Keystone, ...).

Each request goes through the shared retry mechanism (timeouts, resets, 429 and 5xx with
backoff inside a deadline) and the token layer's 401 helper (one forced refresh, then a
diagnosis). Errors carry the service name and status, never the token; logged URLs are
redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import requests

from nbplugins.errors import ServiceError, TransientError
from nbplugins.retry import RETRYABLE_STATUS, Retry, describe
from nbplugins.secrets import redact
from nbplugins.tokens import Token, TokenProvider, with_token_retry

log = logging.getLogger(__name__)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class HttpClient:
    """Requests against one service, authenticated with a token provider, retried as one policy."""

    def __init__(
        self,
        base_url: str,
        *,
        service: str,
        token: TokenProvider | None = None,
        header: str = "Authorization",
        scheme: str = "Bearer ",
        retry: Retry | None = None,
        timeout: float | tuple[float, float] = (10.0, 120.0),
        verify: bool | str = True,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.service = service
        self.token = token
        self.header = header
        self.scheme = scheme
        self.retry = retry or Retry()
        self.timeout = timeout
        self.session = session or requests.Session()
        self.verify = verify

    def url(self, path: str) -> str:
        """``path`` under the base URL; an absolute URL is used as it is."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, allow: Iterable[int] = (), **kwargs: Any) -> requests.Response:
        """Send one request; return the response if it is 2xx/3xx or its status is in ``allow``.

        Retryable failures are retried within the policy; a 401 triggers one token refresh;
        anything else raises :class:`ServiceError` with the status and a short reason.
        """
        url = self.url(path)
        allowed = set(allow)
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self.verify)  # per request: REQUESTS_CA_BUNDLE overrides Session.verify
        headers = dict(kwargs.pop("headers", None) or {})

        def attempt(token: Token | None) -> requests.Response:
            def once() -> requests.Response:
                if token is not None:
                    headers[self.header] = f"{self.scheme}{token.value}"
                response = self.session.request(method, url, headers=headers, **kwargs)
                log.debug("%s %s -> %s", method, redact(url), response.status_code)
                if response.status_code in RETRYABLE_STATUS and response.status_code not in allowed:
                    raise TransientError(
                        f"{self.service} answered HTTP {response.status_code} to {method} {redact(url)}",
                        response.status_code, _retry_after(response),
                    )
                return response

            return self.retry.call(once, what=f"{self.service} {method} {redact(url)}")

        try:
            if self.token is None:
                response = attempt(None)
            else:
                response = with_token_retry(
                    attempt, self.token, service=self.service,
                    unauthorized=lambda r: r.status_code == 401 and 401 not in allowed,
                )
        except requests.RequestException as exc:
            raise ServiceError(f"{self.service}: {method} {redact(url)} failed: {describe(exc)}") from None
        if response.status_code >= 400 and response.status_code not in allowed:
            raise ServiceError(
                f"{self.service}: {method} {redact(url)} answered HTTP {response.status_code}: {_reason(response)}",
                response.status_code,
            )
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        """Close the HTTP session and its pooled connections."""
        self.session.close()


def _reason(response: requests.Response) -> str:
    """A short, redacted reason from an error body: JSON error fields or the first line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            text = err.get("description") or err.get("message") or err.get("detail") or err.get("id") or str(err)
        else:
            text = body.get("message") or body.get("detail") or str(err)
    else:
        text = (response.text or response.reason or "").strip().splitlines()[0] if (response.text or response.reason) else ""
    return redact(str(text))[:300]
