"""The one registry of live secret values and the one scrubber that removes them.

Every token, refresh token, client secret and storage key nbplugins resolves is registered
here; :func:`redact` replaces each, in its raw, base64 and URL-encoded forms, with a marker.
Logs, exception messages, CLI output and executed notebooks all pass through it.

A *secret reference* names a secret instead of holding it, so it can travel through
notebooks, pipeline files and parameter tables safely; it is resolved only where it is used:

``@oidc``         the current OIDC access token (from :mod:`nbplugins.tokens`)
``@env:NAME``     the value of environment variable ``NAME`` in the resolving process
``@file:PATH``    the contents of a file (for example a key file), stripped
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
import traceback
import urllib.parse
from collections.abc import Iterable
from typing import Any

REFERENCE = re.compile(r"^@(oidc|env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")
MARKER = "***"
MIN_LENGTH = 6  # shorter values would scrub ordinary words

_lock = threading.Lock()
_values: dict[str, str] = {}  # form -> label
_pattern: re.Pattern[str] | None = None


def _forms(value: str) -> set[str]:
    raw = value.encode()
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = enc.decode()
        forms.add(text)
        forms.add(text.rstrip("="))
    return {f for f in forms if len(f) >= MIN_LENGTH}


def register(value: str | None, label: str = "secret") -> None:
    """Remember ``value`` as a secret so that every later :func:`redact` removes it."""
    global _pattern
    if not value or len(value) < MIN_LENGTH:
        return
    with _lock:
        new = _forms(value) - _values.keys()
        if not new:
            return
        for form in new:
            _values[form] = label
        alternatives = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(a) for a in alternatives))


def registered_count() -> int:
    """How many distinct forms are registered (for tests and diagnostics, never the values)."""
    return len(_values)


def clear() -> None:
    """Forget every registered value (tests only)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def redact(text: str) -> str:
    """Return ``text`` with every registered secret (and its encodings) replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MARKER, text)


def redact_count(text: str) -> tuple[str, int]:
    """Like :func:`redact` and also say how many occurrences were replaced."""
    pattern = _pattern
    if pattern is None or not text:
        return text, 0
    return pattern.subn(MARKER, text)


def redact_value(value: Any) -> tuple[Any, int]:
    """Redact strings anywhere inside a JSON-like value; return the copy and the count."""
    if isinstance(value, str):
        return redact_count(value)
    if isinstance(value, list):
        total = 0
        out = []
        for item in value:
            item, n = redact_value(item)
            out.append(item)
            total += n
        return out, total
    if isinstance(value, dict):
        total = 0
        out_d = {}
        for key, item in value.items():
            item, n = redact_value(item)
            out_d[key] = item
            total += n
        return type(value)(out_d) if type(value) is not dict else out_d, total
    return value, 0


def redact_notebook(nb: Any) -> int:
    """Scrub a notebook in place (sources, outputs, tracebacks, all metadata); return the count.

    Works on ``nbformat.NotebookNode`` and plain dicts alike.
    """
    from nbformat import from_dict

    total = 0
    for key in list(nb.get("metadata", {})):
        nb["metadata"][key], n = redact_value(nb["metadata"][key])
        total += n
    for i, cell in enumerate(nb.get("cells", [])):
        scrubbed, n = redact_value(dict(cell))
        if n:
            nb["cells"][i] = from_dict(scrubbed)
            total += n
    if total:
        nb["metadata"] = from_dict(nb["metadata"])
    return total


def environ_secrets(names: Iterable[str]) -> None:
    """Register the values of the named environment variables that are set."""
    for name in names:
        register(os.environ.get(name), name)


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the message, its arguments and any formatted traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process, whichever library logs it.

    A filter on a logger misses records from its children, so the filter goes on the root
    handlers and a record factory redacts messages at creation for handlers added later.
    """
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()
    log_filter = RedactingFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        log_filter.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    for handler in logging.getLogger().handlers:
        handler.addFilter(log_filter)
    logging.getLogger("nbplugins").addFilter(log_filter)


def is_reference(value: Any) -> bool:
    """True if ``value`` is a secret reference such as ``@oidc`` or ``@env:NAME``."""
    return isinstance(value, str) and REFERENCE.match(value) is not None


def resolve_reference(what: str, reference: str) -> str:
    """The secret a reference names, registered with the scrubber; ``what`` names the user."""
    from nbplugins.errors import ValidationError

    kind, _, arg = reference[1:].partition(":")
    if kind == "oidc":
        from nbplugins import tokens

        value = tokens.current()
    elif kind == "env":
        value = os.environ.get(arg, "")
        if not value:
            raise ValidationError(f"{what}: environment variable {arg} (from {reference}) is not set")
    else:
        try:
            with open(os.path.expanduser(arg)) as handle:
                value = handle.read().strip()
        except OSError as exc:
            raise ValidationError(f"{what}: cannot read {arg} ({exc.strerror})") from None
        if not value:
            raise ValidationError(f"{what}: {arg} is empty")
    register(value, what)
    return value


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Write a file readable by its owner only (0600), atomically, for tokens and keys."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
