"""The one atomic write: whole files only, 0600 unless asked, long names, nothing left behind."""

from __future__ import annotations

import os
import threading

import pytest

from nbplugins import files
from nbplugins.errors import TokenError, ValidationError
from nbplugins.paths import NAME_MAX


def test_a_new_file_is_private_and_its_missing_folders_are_created(tmp_path, canary):
    target = tmp_path / "a" / "b" / "key.json"
    files.write_atomic(target, canary)
    assert target.read_text() == canary
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert oct(target.parent.stat().st_mode & 0o777) == "0o700"
    assert os.listdir(target.parent) == ["key.json"]


def test_mode_none_gives_what_a_new_file_gets_and_bytes_are_written_as_they_are(tmp_path):
    old = os.umask(0o022)
    try:
        files.write_atomic(tmp_path / "report.html", b"\x00\xffpng", mode=None)
        files.write_atomic(tmp_path / "qr.png", b"x", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "report.html").read_bytes() == b"\x00\xffpng"
    assert oct((tmp_path / "report.html").stat().st_mode & 0o777) == "0o644"
    assert oct((tmp_path / "qr.png").stat().st_mode & 0o777) == "0o644"


def test_a_name_of_the_longest_length_still_gets_a_temporary_name(tmp_path):
    target = tmp_path / "out" / ("é" * ((NAME_MAX - 5) // 2) + ".json")
    assert len(target.name.encode()) <= NAME_MAX
    files.write_atomic(target, "{}")
    assert target.read_text() == "{}" and os.listdir(target.parent) == [target.name]


def test_an_existing_file_is_replaced_whole_and_a_failed_write_leaves_no_temporary_file(tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    target = tmp_path / "run.json"
    target.write_text("old")
    files.write_atomic(target, "new", mode=None)
    assert target.read_text() == "new"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside").write_text("x")
    with pytest.raises(OSError):
        files.write_atomic(folder, "cannot replace a folder")
    assert sorted(os.listdir(tmp_path)) == ["folder", "run.json"]


def test_writers_in_threads_never_leave_half_a_file(tmp_path):
    target = tmp_path / "out" / "record.json"
    bodies = [str(n) * 100_000 for n in range(8)]
    threads = [threading.Thread(target=files.write_atomic, args=(target, body)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_text() in bodies and os.listdir(target.parent) == ["record.json"]


def test_a_secret_file_is_read_or_refused_with_the_given_error(tmp_path):
    assert files.read_secret_file(tmp_path / "nope", "token file", TokenError, missing_ok=True) is None
    with pytest.raises(TokenError, match="^token file: does not exist$"):
        files.read_secret_file(tmp_path / "nope", "token file", TokenError)
    with pytest.raises(ValidationError, match="is a directory"):
        files.read_secret_file(tmp_path, "key")
    (tmp_path / "key").write_bytes(b"\xff\xfe")
    with pytest.raises(ValidationError, match="is not UTF-8 text"):
        files.read_secret_file(tmp_path / "key", "key")
