"""The one retry-and-poll mechanism: deadline, capped exponential backoff with jitter,
a budget of consecutive errors, a retryable predicate, and cancellation.

Storage transfers, the token refresh helper and every remote-service client go through
:meth:`Retry.call` (do one thing until it works, then turn a final failure into a domain
error with ``map_error``) or :func:`poll` (ask until it is done). The numbers come from the
caller or from :func:`nbplugins.config.retry_policy`, which builds the configured default;
this module knows nothing of the config.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

from nbplugins.errors import Cancelled, DeadlineExceeded, NbpluginsError, TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Turns the exception that ends a call into the one to raise instead (None: raise it as it is).
ErrorMapper = Callable[[Exception], BaseException | None]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_NAMES = frozenset(
    {
        # requests / urllib3
        "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "ChunkedEncodingError",
        "ProtocolError", "NewConnectionError", "MaxRetryError", "IncompleteRead",
        # botocore / aiobotocore / aiohttp
        "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
        "ConnectTimeoutError", "ResponseStreamingError", "ServerDisconnectedError",
        "ClientConnectionError", "ClientOSError", "ClientPayloadError", "ServerTimeoutError",
        # httpx
        "RemoteProtocolError", "ReadError", "WriteError", "PoolTimeout",
    }
)
_TRANSIENT_ERRNO = frozenset({errno.ECONNRESET, errno.ECONNREFUSED, errno.EPIPE, errno.ETIMEDOUT, errno.ECONNABORTED})


def status_of(exc: BaseException) -> int | None:
    """The HTTP status carried by an exception from requests, botocore or nbplugins, if any."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    if isinstance(code, int):
        return code
    if isinstance(response, dict):  # botocore ClientError
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    return None


_TLS_NAMES = frozenset({"SSLError", "SSLCertVerificationError", "CertificateError"})
_TLS_TEXT = ("CERTIFICATE_VERIFY_FAILED", "SSLCertVerificationError")


def _is_tls_type(exc: BaseException) -> bool:
    return any(cls.__name__ in _TLS_NAMES for cls in type(exc).__mro__)


def is_tls_error(exc: BaseException) -> bool:
    """True when TLS failed (handshake or certificate): retrying does not make a certificate trusted.

    Looks at the error and every error in its chain (``__cause__``/``__context__``), by type
    (``ssl.SSLError``, requests' and botocore's ``SSLError``, ``CertificateError``) and by the
    text of a certificate verification failure, which requests and urllib3 bury inside a
    ``ConnectionError``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_tls_type(current) or any(text in repr(current) for text in _TLS_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later attempt may not see: timeouts, resets, 429 and 5xx."""
    if isinstance(exc, TransientError):
        return True
    if _is_tls_type(exc):
        return False  # a certificate problem does not fix itself
    if isinstance(exc, (TimeoutError, socket.timeout, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return True
    status = status_of(exc)
    if status is not None:
        return status in RETRYABLE_STATUS
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


@dataclass(frozen=True)
class Retry:
    """A retry policy. Immutable: derive variants with :meth:`with_`."""

    deadline: float = 300.0
    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.5
    error_budget: int = 8
    retryable: Callable[[BaseException], bool] = is_transient
    cancel: threading.Event | None = None

    @classmethod
    def from_config(cls, **overrides: object) -> Retry:
        """The configured default policy, with call-site overrides.

        :mod:`nbplugins.config` installs the ``[retry]`` section here when it is imported
        (:func:`set_default_policy`); before that, the built-in numbers (the same defaults).
        New code can call :func:`nbplugins.config.retry_policy` directly.
        """
        base = _default_policy() if _default_policy is not None else cls()
        return replace(base, **overrides)  # type: ignore[arg-type]

    def with_(self, **overrides: object) -> Retry:
        """A copy with some fields changed (``policy.with_(deadline=60)``)."""
        return replace(self, **overrides)  # type: ignore[arg-type]

    def delays(self) -> Iterator[float]:
        """Backoff delays: initial * factor**n, capped, each with up to ``jitter`` spread."""
        delay = self.initial
        while True:
            spread = delay * self.jitter
            yield max(0.0, min(self.cap, delay + random.uniform(-spread, spread)))
            delay = min(self.cap, delay * self.factor)

    def sleep(self, seconds: float) -> None:
        """Wait, waking at once when the cancel event is set."""
        if seconds <= 0:
            return
        if self.cancel is None:
            time.sleep(seconds)
        elif self.cancel.wait(seconds):
            raise Cancelled("cancelled while waiting to retry")

    def call(self, fn: Callable[[], T], what: str = "request", *, map_error: ErrorMapper | None = None) -> T:
        """Call ``fn`` until it returns, retrying retryable errors within the deadline.

        The error that ends the call (not retryable, budget or deadline spent, cancelled)
        goes through ``map_error``: the exception it returns is raised in its place (``from
        None``, so no traceback chain repeats what it says); None raises the error as it is.
        """
        try:
            return self._call(fn, what)
        except Exception as exc:
            mapped = map_error(exc) if map_error is not None else None
            if mapped is None or mapped is exc:
                raise
            raise mapped from None

    def _call(self, fn: Callable[[], T], what: str) -> T:
        start = time.monotonic()
        errors = 0
        delays = self.delays()
        while True:
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled(f"{what}: cancelled")
            try:
                return fn()
            except Exception as exc:
                if not self.retryable(exc):
                    raise
                errors += 1
                delay = next(delays)
                retry_after = getattr(exc, "retry_after", None)
                if isinstance(retry_after, (int, float)):
                    delay = max(delay, min(float(retry_after), self.cap))
                elapsed = time.monotonic() - start
                if errors >= self.error_budget:
                    raise DeadlineExceeded(
                        f"{what}: gave up after {errors} consecutive errors; last: {describe(exc)}"
                    ) from exc
                if elapsed + delay > self.deadline:
                    raise DeadlineExceeded(
                        f"{what}: gave up after {elapsed:.0f} s (deadline {self.deadline:.0f} s); last: {describe(exc)}"
                    ) from exc
                log.info("%s failed (%s); retry %d in %.1f s", what, describe(exc), errors, delay)
                self.sleep(delay)


_default_policy: Callable[[], Retry] | None = None


def set_default_policy(factory: Callable[[], Retry]) -> None:
    """Install what :meth:`Retry.from_config` builds on (config does, with its ``[retry]`` section)."""
    global _default_policy
    _default_policy = factory


def foreign_as(convert: Callable[[Exception], BaseException]) -> ErrorMapper:
    """An error mapper: nbplugins' own errors go up as they are, any other as ``convert(exc)``."""

    def mapper(exc: Exception) -> BaseException | None:
        return None if isinstance(exc, NbpluginsError) else convert(exc)

    return mapper


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def describe(exc: BaseException) -> str:
    """A short one-line account of an error for messages: its type and first line.

    Connection errors from requests/urllib3 nest the OS reason deep in a long repr; the
    reason alone ("Connection refused") is what a person needs.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, NbpluginsError) and text:
        return text  # our own messages are written for people already
    found = _ERRNO_TEXT.search(text)
    if found:
        return found.group(1).strip().lower()
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


S = TypeVar("S")


def poll(
    fetch: Callable[[], S],
    done: Callable[[S], bool],
    *,
    what: str = "job",
    interval: float | Callable[[float], float] = 1.0,
    max_interval: float = 15.0,
    deadline: float = 3600.0,
    retry: Retry | None = None,
    on_status: Callable[[S], None] | None = None,
) -> S:
    """Ask ``fetch`` for a status until ``done(status)``, the deadline, or cancellation.

    ``interval`` is either the first wait (growing 1.5x per status up to ``max_interval``) or
    a schedule: a function of the seconds elapsed since the first fetch giving the next wait
    (remote jobs use ``max(1, elapsed / 10)``). Each fetch is itself retried with ``retry``,
    so a flaky status URL costs backoff, not a busy loop (unlike owslib's
    ``monitorExecution``).
    """
    policy = retry or Retry()
    start = time.monotonic()
    wait = interval if isinstance(interval, (int, float)) else 0.0
    while True:
        remaining = deadline - (time.monotonic() - start)
        if remaining <= 0:
            raise DeadlineExceeded(f"{what}: not finished after {deadline:.0f} s")
        status = policy.with_(deadline=max(1.0, remaining)).call(fetch, what=f"{what} status")
        if on_status is not None:
            on_status(status)
        if done(status):
            return status
        elapsed = time.monotonic() - start
        if callable(interval):
            wait = min(max_interval, interval(elapsed))
        policy.sleep(min(wait, max(0.0, deadline - elapsed)))
        if not callable(interval):
            wait = min(max_interval, wait * 1.5)
