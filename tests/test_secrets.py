"""The scrubber: raw, base64 (any alignment), hex and URL-encoded forms, URL credentials,
notebooks, logs of any library, secret files that cannot block or flood, 0600 files."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import urllib.parse

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from nbplugins import files, references, secrets
from nbplugins.errors import NbpluginsError, TransientError, ValidationError
from tests import bounded


def test_redact_replaces_raw_base64_and_url_encoded_forms(canary):
    value = canary + "/+=&"
    secrets.register(value, "test")
    text = " ".join([value, base64.b64encode(value.encode()).decode(),
                     base64.urlsafe_b64encode(value.encode()).decode().rstrip("="),
                     urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)])
    out = secrets.redact(text)
    assert canary not in out and out.count("***") == 5


def test_short_values_are_not_registered():
    secrets.register("abc", "short")
    assert secrets.redact("abc abc") == "abc abc"


def test_notebook_scrub_covers_sources_outputs_tracebacks_and_metadata(canary):
    secrets.register(canary)
    nb = new_notebook(cells=[
        new_code_cell(f'token = "{canary}"', outputs=[
            new_output("stream", name="stdout", text=f"got {canary}\n"),
            new_output("execute_result", data={"text/plain": f"'{canary}'"}, execution_count=1),
            new_output("error", ename="E", evalue=canary, traceback=[f"line {canary}"]),
        ]),
    ])
    nb.metadata["papermill"] = {"parameters": {"token": canary}}
    count = secrets.redact_notebook(nb)
    assert count == 6
    assert canary not in nbformat.writes(nb)
    nbformat.validate(nb)


def test_log_records_of_any_library_are_redacted(canary, caplog):
    secrets.register(canary)
    secrets.install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("botocore.somewhere").info("url https://x/?key=%s", canary)
        try:
            raise ValueError(f"bad {canary}")
        except ValueError:
            logging.getLogger("nbplugins.x").exception("failed")
    assert canary not in caplog.text
    assert "key=***" in caplog.text


# ----------------------------------------------------------------------------- every alignment, hex


def _left(encoded: str, prefix: bytes, secret: bytes) -> int:
    """How many characters of base64(prefix + secret + suffix) carry a bit of prefix or suffix only."""
    start = -(-8 * len(prefix) // 6)
    end = 8 * (len(prefix) + len(secret)) // 6
    return start + len(encoded) - end


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"user:", b"Bearer ", b"svc-account:", b"\x00\xff"])
@pytest.mark.parametrize("suffix", [b"", b"z", b"\n", b":extra-bytes"])
def test_base64_of_a_secret_inside_other_bytes_leaves_no_trace(canary, prefix, suffix):
    secrets.register(canary)
    raw = canary.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for encoded in (encode(prefix + raw + suffix).decode(), encode(prefix + raw + suffix).decode().rstrip("=")):
            out = secrets.redact(f"header: {encoded};")
            assert out.count("***") == 1, (prefix, suffix, out)
            kept = out[len("header: "):-1].replace("***", "")
            # what is left encodes the neighbouring bytes (and at most the bits one character shares)
            assert len(kept) <= _left(encoded, prefix, raw), (prefix, suffix, out)
            assert encoded[-(-8 * len(prefix) // 6):8 * (len(prefix) + len(raw)) // 6] not in out


def test_basic_and_bearer_credentials_encoded_whole_are_scrubbed(canary):
    secrets.register(canary)
    basic = base64.b64encode(f"alice:{canary}".encode()).decode()
    bearer = base64.b64encode(f"Bearer {canary}".encode()).decode()
    header = base64.urlsafe_b64encode(f"Authorization: Bearer {canary}\r\n".encode()).decode()
    text = f"Authorization: Basic {basic}\n{bearer}\n{header}"
    out = secrets.redact(text)
    assert out.count("***") == 3
    for original in (basic, bearer, header):
        assert original not in out
    assert out.startswith("Authorization: Basic YWxpY2U6***")  # "alice:" is left, the password is not


def test_hex_in_either_case_is_scrubbed(canary):
    secrets.register(canary)
    for prefix in (b"", b"x", b"Bearer "):
        blob = (prefix + canary.encode() + b"\n").hex()
        for text in (blob, blob.upper()):
            out = secrets.redact(text)
            assert canary.encode().hex() not in out.lower() and out.count("***") == 1


def test_shifted_forms_scrub_notebook_outputs(canary):
    secrets.register(canary)
    basic = base64.b64encode(f"user:{canary}".encode()).decode()
    nb = new_notebook(cells=[new_code_cell("print(auth)", outputs=[
        new_output("stream", name="stdout", text=f"Basic {basic}\n"),
        new_output("execute_result", data={"text/plain": repr((b"x" + canary.encode()).hex())}, execution_count=1),
    ])])
    assert secrets.redact_notebook(nb) == 2
    text = nbformat.writes(nb)
    assert basic not in text and canary.encode().hex() not in text


def test_short_secrets_still_register_no_short_forms():
    secrets.register("abcdef", "six")  # MIN_LENGTH: every form it adds is 6 characters or more
    assert secrets.redact("abcde fghij YWJj abc") == "abcde fghij YWJj abc"
    assert secrets.redact("abcdef") == "***"


# ----------------------------------------------------------------------------- URL credentials


def test_url_credentials_are_masked_registered_or_not(canary):
    text = (f"GET http://user:{canary}@127.0.0.1:9000/bucket failed; "
            f"https://{canary}@git.example.org/repo.git and s3+https://k:p@ss@host/x?a=b@c")
    out = secrets.redact(text)
    assert canary not in out
    assert out == ("GET http://***@127.0.0.1:9000/bucket failed; https://***@git.example.org/repo.git "
                   "and s3+https://***@host/x?a=b@c")
    untouched = ("mail alice@example.org, http://host/p?u=a@b, f\"https://{user}:{password}@host\", "
                 "onedata://shared@0f1e2d3c/table.csv")  # the last names a space (name@spaceId), not a user
    assert secrets.redact(untouched) == untouched
    assert secrets.redact_count(out) == (out, 0)  # masking twice counts nothing new


def test_errors_and_logs_carrying_an_endpoint_with_credentials_are_masked(canary, caplog):
    from nbplugins.storage import s3, s3wire
    from tests.servers import harness

    assert canary not in str(NbpluginsError(f"cannot reach http://admin:{canary}@host/"))
    port = harness.free_port()
    down = s3wire.ObjectWire(s3.S3Settings(name="d", endpoint_url=f"http://admin:{canary}@127.0.0.1:{port}",
                                           region="us-east-1", access_key_id="k", secret_access_key="s" * 8))
    with pytest.raises(TransientError) as info:
        down.head_bucket(Bucket="b")
    assert f"could not connect to the endpoint http://***@127.0.0.1:{port}" in str(info.value)
    assert canary not in str(info.value)
    secrets.install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("botocore.endpoint").info("Sending request to %s", f"https://u:{canary}@s3.example.org/")
    assert canary not in caplog.text and "https://***@s3.example.org/" in caplog.text


# ----------------------------------------------------------------------------- secret files


def _unblock(fifo) -> None:
    with contextlib.suppress(OSError):  # a reader blocked on the FIFO gets end-of-file
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_file_reference_refuses_a_fifo_at_once_naming_the_path(tmp_path, canary):
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    try:
        error, _ = bounded.call_within(lambda: references.resolve_reference("node 'a'", f"@file:{fifo}"))
    finally:
        _unblock(fifo)
    assert isinstance(error, ValidationError), error
    assert str(error) == f"node 'a': {fifo}: is a FIFO, not a regular file; secrets are read from regular files only"


def test_file_reference_refuses_devices_and_big_files_in_one_line(tmp_path):
    error, _ = bounded.call_within(lambda: references.resolve_reference("x", "@file:/dev/null"))
    assert isinstance(error, ValidationError) and "/dev/null: is a device, not a regular file" in str(error)
    error, _ = bounded.call_within(lambda: references.resolve_reference("x", "@file:/dev/zero"))  # would fill memory
    assert isinstance(error, ValidationError) and "/dev/zero: is a device" in str(error)
    big = tmp_path / "key"
    big.write_text("k" * (files.MAX_FILE_SIZE + 1))
    error, _ = bounded.call_within(lambda: references.resolve_reference("x", f"@file:{big}"))
    assert isinstance(error, ValidationError) and f"{big}: is 64 KiB, too big" in str(error)
    with open(big, "r+b") as handle:
        handle.truncate(20 << 20)  # 20 MiB: refused from its size, never read
    error, seconds = bounded.call_within(lambda: references.resolve_reference("x", f"@file:{big}"))
    assert str(error) == f"x: {big}: is 20.0 MiB, too big for a token or key file (at most 64 KiB)"
    assert seconds < 1 and secrets.registered_count() == 0


def test_file_reference_reads_a_small_key_file(tmp_path, canary):
    key = tmp_path / "key"
    key.write_text(f"  {canary}\n")
    assert references.resolve_reference("x", f"@file:{key}") == canary
    assert secrets.redact(canary) == "***"


# ----------------------------------------------------------------------------- log records


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
