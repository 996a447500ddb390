"""The scrubber: raw, base64 and URL-encoded forms, notebooks, logs of any library, 0600 files."""

from __future__ import annotations

import base64
import logging
import os
import urllib.parse

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from nbplugins import secrets


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


def test_write_private_creates_a_0600_file_atomically(tmp_path, canary):
    target = tmp_path / "sub" / "cred.json"
    secrets.write_private(target, canary)
    assert target.read_text() == canary
    assert oct(os.stat(target).st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in target.parent.iterdir()) == ["cred.json"]
