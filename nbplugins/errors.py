"""Every error nbplugins raises on purpose: one type per kind of failure, messages for people.

The CLI prints ``str(error)`` as one line and exits 1; anything else is a bug and shows a
traceback only with ``--debug``. Messages are redacted when they are built, so a secret
that slips into one never reaches a terminal or a log.
"""

from __future__ import annotations

from nbplugins.secrets import redact


class NbpluginsError(Exception):
    """Base of every expected failure; the message says what was wrong and what to do."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class ConfigError(NbpluginsError):
    """A configuration file or environment variable is malformed or unknown."""


class TokenError(NbpluginsError):
    """No usable token: none found, unreadable, malformed, or the issuer refused."""


class TokenExpiredError(TokenError):
    """The only token found has expired and its source cannot refresh it."""


class AuthError(NbpluginsError):
    """A service refused the token twice (after one forced refresh)."""


class ServiceError(NbpluginsError):
    """A remote service failed in a way retries did not cure."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(ServiceError):
    """A failure worth retrying (5xx, 429, reset, timeout); raised to the retry loop."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, status)
        self.retry_after = retry_after


class DeadlineExceeded(ServiceError):
    """The retry or poll deadline passed, or the budget of consecutive errors ran out."""


class Cancelled(NbpluginsError):
    """The user interrupted a wait (Ctrl-C or a cancel event)."""

    exit_code = 130


class StorageError(NbpluginsError):
    """A storage URL, bucket, key or local path is wrong, or a transfer failed verification."""


class ExecutionError(NbpluginsError):
    """A notebook, sweep or pipeline step failed."""


class ValidationError(NbpluginsError):
    """An input file (pipeline, spec, grid, template) is malformed."""
