"""Staging through a filesystem that is neither local nor S3 (Onedata): sequential, verified, atomic."""

from __future__ import annotations

# ruff: noqa: F811 -- fixtures imported from onedata_fixtures are test parameters
import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from nbplugins.errors import NbpluginsError
from nbplugins.retry import Retry
from nbplugins.storage import staging
from tests.storage.onedata_fixtures import onedata_env, onedata_fs, onedata_server  # noqa: F401

MiB = 1 << 20


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != staging.MANIFEST}


def test_put_get_and_sync_through_onedata_are_verified_and_skip_what_is_there(onedata_fs, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(3 * MiB + 5))
    (src / "sub" / "small.txt").write_text("small")
    (src / "empty").write_bytes(b"")
    remote = f"onedata://{onedata_fs.test_base}/set/"
    put = staging.consume(staging.put(str(src), remote, part_size=MiB), progress=False)
    assert put.files == 3 and put.manifest == f"onedata://{onedata_fs.test_base}/set/{staging.MANIFEST}"
    manifest = json.loads(onedata_fs.cat_file(f"{onedata_fs.test_base}/set/{staging.MANIFEST}"))["files"]
    assert set(manifest) == {"big.bin", "sub/small.txt", "empty"} and manifest["big.bin"]["etag"].endswith("-4")
    assert not [p for p in onedata_fs.find(onedata_fs.test_base) if staging.TMP_MARK in p]
    got = staging.consume(staging.get(remote, str(tmp_path / "back")), progress=False)
    assert got.files == 3 and tree(tmp_path / "back") == tree(src)
    again = staging.consume(staging.put(str(src), remote, part_size=MiB), progress=False)
    assert again.files == 0 and again.skipped == 3
    copy = f"onedata://{onedata_fs.test_base}/copy-{uuid.uuid4().hex[:6]}/"
    synced = staging.consume(staging.sync(remote, copy, part_size=MiB), progress=False)
    assert synced.files == 3
    assert onedata_fs.cat_file(f"{copy[len('onedata://'):]}big.bin") == (src / "big.bin").read_bytes()


def test_bytes_that_differ_from_the_manifest_are_refused_and_nothing_is_left(onedata_fs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(2 * MiB))
    remote = f"onedata://{onedata_fs.test_base}/rot/"
    staging.consume(staging.put(str(src), remote), progress=False)
    rotten = bytearray((src / "a.bin").read_bytes())
    rotten[5] ^= 1
    onedata_fs.pipe_file(f"{onedata_fs.test_base}/rot/a.bin", bytes(rotten))
    copy = f"onedata://{onedata_fs.test_base}/rot-copy/"
    # (a sequential copy retries a mismatch within the retry policy, not 3 times as parallel parts do)
    with pytest.raises(NbpluginsError, match="a.bin: XXH3-128 .* says"):
        staging.consume(staging.sync(remote, copy, retry=Retry(initial=0.01, cap=0.05, deadline=30)), progress=False)
    assert not [p for p in onedata_fs.find(onedata_fs.test_base) if staging.TMP_MARK in p]
    assert not onedata_fs.exists(f"{onedata_fs.test_base}/rot-copy/a.bin")
