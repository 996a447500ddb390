"""Downloads check every destination of the plan before writing, take file names up to
NAME_MAX, and never replace a different local file silently (counted, or kept with
--no-clobber)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from nbplugins.errors import StorageError
from nbplugins.storage import staging
from tests.servers import s3 as s3_servers


@pytest.fixture
def moto_bucket(moto, monkeypatch) -> tuple[object, str, dict[str, str]]:
    """A fresh bucket on the moto server (which takes any key), the AWS_* environment set."""
    env = s3_servers.aws_env(moto)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from nbplugins.storage import s3

    client = s3.resolve().client()
    name = f"paths-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return client, name, env


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbplugins", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


@pytest.mark.parametrize("bad", ["q/.", "x" * 300 + ".bin"])
def test_a_key_that_names_no_local_file_is_refused_before_any_file_lands(moto_bucket, tmp_path, bad):
    client, bucket, env = moto_bucket
    for key in ("a.txt", "b/c.txt", "d.txt", bad, "z.txt"):  # the bad one in the middle of the plan
        client.put_object(Bucket=bucket, Key=f"set/{key}", Body=b"data " + key.encode())
    out = tmp_path / "out"
    with pytest.raises(StorageError, match="nothing was transferred") as info:
        staging.consume(staging.get(f"s3://{bucket}/set", str(out)), progress=False)
    assert repr(bad) in str(info.value)
    assert not out.exists()
    result = cli("data", "get", "-q", f"s3://{bucket}/set", str(out), env=env)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert repr(bad) in result.stderr and not out.exists()


def test_a_250_byte_file_name_downloads(moto_bucket, tmp_path):
    client, bucket, _ = moto_bucket
    name = "n" * 246 + ".bin"
    assert len(name.encode()) == 250
    body = os.urandom(70_000)
    client.put_object(Bucket=bucket, Key=f"long/{name}", Body=body)
    client.put_object(Bucket=bucket, Key="long/" + "é" * 121 + ".txt", Body=b"accents")  # 246 bytes, 121 chars
    got = staging.consume(staging.get(f"s3://{bucket}/long", str(tmp_path / "out")), progress=False)
    assert got.files == 2
    assert (tmp_path / "out" / name).read_bytes() == body
    assert (tmp_path / "out" / ("é" * 121 + ".txt")).read_bytes() == b"accents"
    single = staging.consume(staging.get(f"s3://{bucket}/long/{name}", str(tmp_path / name)), progress=False)
    assert single.files == 1 and (tmp_path / name).read_bytes() == body
    leftovers = [p for p in tmp_path.rglob("*") if staging.TMP_MARK in p.name]
    assert leftovers == []


def test_data_get_counts_replaced_local_files_and_no_clobber_keeps_them(moto_bucket, tmp_path):
    client, bucket, env = moto_bucket
    for key, body in (("a.txt", b"remote a"), ("b.txt", b"same b"), ("c.txt", b"only remote")):
        client.put_object(Bucket=bucket, Key=f"set/{key}", Body=body)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_bytes(b"my local edit")
    (out / "b.txt").write_bytes(b"same b")

    kept = cli("data", "get", "-q", "--no-clobber", f"s3://{bucket}/set", str(out), env=env)
    assert kept.returncode == 0, kept.stderr
    assert "1 different local file kept" in kept.stdout and "0 local files replaced" in kept.stdout, kept.stdout
    assert (out / "a.txt").read_bytes() == b"my local edit" and (out / "c.txt").read_bytes() == b"only remote"
    manifest = json.loads((out / staging.MANIFEST).read_text())
    assert "a.txt" not in manifest["files"]  # the kept file is not the source's: not vouched for

    replaced = cli("data", "get", "-q", f"s3://{bucket}/set", str(out), env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert "1 local file replaced" in replaced.stdout and "2 already there" in replaced.stdout, replaced.stdout
    assert (out / "a.txt").read_bytes() == b"remote a"
    summary = staging.consume(staging.get(f"s3://{bucket}/set", str(out)), progress=False)
    assert summary.replaced == 0 and summary.skipped == 3
    (out / "c.txt").write_bytes(b"changed again")
    summary = staging.consume(staging.get(f"s3://{bucket}/set", str(out), clobber=False), progress=False)
    assert summary.kept == 1 and summary.replaced == 0 and (out / "c.txt").read_bytes() == b"changed again"
    summary = staging.consume(staging.get(f"s3://{bucket}/set", str(out)), progress=False)
    assert summary.replaced == 1 and (out / "c.txt").read_bytes() == b"only remote"


def test_a_plan_that_only_refuses_leaves_an_existing_destination_as_it_was(moto_bucket, tmp_path):
    client, bucket, _ = moto_bucket
    client.put_object(Bucket=bucket, Key="set/a.txt", Body=b"new")
    client.put_object(Bucket=bucket, Key="set/q/.", Body=b"bad")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_bytes(b"old")
    with pytest.raises(StorageError, match="'q/.'"):
        staging.consume(staging.get(f"s3://{bucket}/set", str(out)), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"] and (out / "a.txt").read_bytes() == b"old"
