"""secrets.RedactingFilter: log records keep their exception, and every handler prints its
traceback redacted. (Belongs in tests/test_secrets.py; kept apart while that file is edited.)"""

from __future__ import annotations

import io
import logging

from nbplugins import secrets


class Keep(logging.Handler):
    """A handler that keeps the records it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_records_keep_exc_info_and_every_handler_prints_the_redacted_traceback(canary):
    secrets.register(canary)
    secrets.install_log_redaction()
    logger = logging.getLogger(f"nbplugins.test.{canary[-8:]}")
    streams = [io.StringIO(), io.StringIO()]
    handlers = [logging.StreamHandler(s) for s in streams]  # added after the redaction was installed
    handlers[1].setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    kept = Keep()
    for handler in (*handlers, kept):
        logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"bad key {canary}")
        except ValueError:
            logger.exception("failed with %s", canary)
    finally:
        for handler in (*handlers, kept):
            logger.removeHandler(handler)
    record = kept.records[0]
    assert record.exc_info is not None and record.exc_info[0] is ValueError  # still there for handlers
    assert canary not in record.exc_text and "ValueError: bad key ***" in record.exc_text
    for stream in streams:
        text = stream.getvalue()
        assert canary not in text
        assert "failed with ***" in text and "Traceback (most recent call last)" in text
        assert "ValueError: bad key ***" in text


def test_the_filter_redacts_a_stack_and_leaves_clean_records_alone(canary):
    secrets.register(canary)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain", None, None, sinfo=f"Stack: {canary}")
    assert secrets.RedactingFilter().filter(record)
    assert record.stack_info == "Stack: ***"
    secrets.clear()
    clean = logging.LogRecord("x", logging.INFO, __file__, 1, "nothing %s", ("here",), None)
    assert secrets.RedactingFilter().filter(clean)
    assert clean.args == ("here",) and clean.exc_text is None
