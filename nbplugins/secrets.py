"""The one registry of live secret values and the one scrubber that removes them.

Every token, refresh token, client secret and storage key nbplugins resolves is registered
here; :func:`redact` replaces each, in its raw, URL-encoded, hex and base64 forms (at any
byte alignment, so inside ``Basic`` credentials too), with a marker, and masks the user
information of every URL. Logs, exception messages, CLI output and executed notebooks all
pass through it.

This module imports nothing of nbplugins: every other module may use it (errors redact
their messages with it). Secret references (``@oidc``, ``@env:``, ``@file:``) are in
:mod:`nbplugins.references`, secret files and atomic writes in :mod:`nbplugins.files`.
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

MARKER = "***"
MIN_LENGTH = 6  # shorter values would scrub ordinary words
# the user information of a URL (scheme://user:password@host): credentials whether registered or not;
# a password may hold "@" (greedy to the last one), a template ("{user}:{password}") is left alone,
# and onedata://name@spaceId/ names a space, not a user
_USERINFO = re.compile(r"(?<![A-Za-z0-9+.\-])(?!onedata://)([A-Za-z][A-Za-z0-9+.\-]*://)(?!\*\*\*@)[^\s/?#'\"<>{}\\]+@")

_lock = threading.Lock()
_values: dict[str, str] = {}  # form -> label
_pattern: re.Pattern[str] | None = None


_URLSAFE = str.maketrans("+/", "-_")


def _base64_cores(raw: bytes) -> set[str]:
    """What base64 of ``raw`` looks like inside base64 of any longer byte string.

    base64 turns each 3 bytes into 4 characters, so a secret preceded by 0, 1 or 2 other
    bytes (``user:`` of a Basic credential, ``Bearer `` of an encoded header) encodes in
    three different ways. For each alignment, the characters that also carry bits of a
    neighbouring byte are dropped: ceil(8p/6) at the start, the partial one at the end.
    What is left depends on the secret alone, whatever comes before or after it.
    """
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        core = encoded[-(-8 * shift // 6):8 * (shift + len(raw)) // 6]
        cores |= {core, core.translate(_URLSAFE)}
    return cores


def _forms(value: str) -> set[str]:
    """Every form of ``value`` to scrub: raw, URL-quoted, base64 (std and urlsafe, any
    alignment, padded or not) and hex (lower and upper case)."""
    raw = value.encode()
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value), raw.hex(), raw.hex().upper()}
    for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = enc.decode()
        forms.add(text)
        forms.add(text.rstrip("="))
    forms |= _base64_cores(raw)
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


def registered_in(text: str) -> int:
    """How many occurrences of registered secrets (any form) ``text`` holds; URLs' user parts aside."""
    pattern = _pattern
    return len(pattern.findall(text)) if pattern is not None and text else 0


def clear() -> None:
    """Forget every registered value (tests only)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def redact(text: str) -> str:
    """Return ``text`` with every registered secret (and its encodings) replaced by ``***``,
    and the user information of every URL too (``https://user:pass@host`` -> ``https://***@host``)."""
    return redact_count(text)[0]


def redact_count(text: str) -> tuple[str, int]:
    """Like :func:`redact` and also say how many occurrences were replaced."""
    if not text:
        return text, 0
    count = 0
    pattern = _pattern
    if pattern is not None:
        text, count = pattern.subn(MARKER, text)
    if "://" in text:
        text, n = _USERINFO.subn(rf"\1{MARKER}@", text)
        count += n
    return text, count


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


def redact_notebook(nb: Any, sources: bool = True) -> int:
    """Scrub a notebook in place (sources, outputs, tracebacks, all metadata); return the count.

    ``sources=False`` leaves the cells' code as it is (a notebook that will run again).
    Works on ``nbformat.NotebookNode`` and plain dicts alike.
    """
    from nbformat import from_dict

    total = 0
    for key in list(nb.get("metadata", {})):
        nb["metadata"][key], n = redact_value(nb["metadata"][key])
        total += n
    for i, cell in enumerate(nb.get("cells", [])):
        scrubbed, n = redact_value({k: v for k, v in cell.items() if sources or k != "source"})
        if n:
            if not sources and "source" in cell:
                scrubbed["source"] = cell["source"]
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
    """Logging filter that redacts the message, its arguments, the traceback and the stack.

    The exception stays on the record (``exc_info``) for every handler; its traceback is
    formatted here, redacted and cached in ``exc_text``, which :class:`logging.Formatter` (and
    every formatter built on it) prints instead of formatting ``exc_info`` again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        has_exc = bool(record.exc_info and record.exc_info[0] is not None)
        if _pattern is None and "://" not in message and not (has_exc or record.exc_text or record.stack_info):
            return True  # nothing registered and no URL that could carry credentials
        record.msg, record.args = redact(message), None
        if has_exc and not record.exc_text:
            # as logging.Formatter.formatException writes it
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).removesuffix("\n")  # type: ignore[misc]
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
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
