"""Staging get/put/sync against real S3 servers on loopback: verified, atomic, resumable, fault-tolerant."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nbplugins import secrets
from nbplugins.errors import StorageError
from nbplugins.storage import staging
from nbplugins.storage.staging import s3 as staging_s3
from tests.servers import s3 as s3_servers
from tests.servers.faultproxy import FaultProxy, Faults

MiB = 1 << 20
PART = 5 * MiB


def make_tree(root: Path, big: int = 12 * MiB, small: int = 12) -> dict[str, str]:
    """A directory with one multi-part file and small files in subfolders; returns rel -> sha256."""
    rng = __import__("random").Random(7)
    (root / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    files = {"big.bin": rng.randbytes(big)}
    for i in range(small):
        files[f"sub/{'deeper/' if i % 3 == 0 else ''}f{i}.dat"] = rng.randbytes(1000 + i * 5000)
    files["empty.txt"] = b""
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != staging.MANIFEST}


def consume(events):
    return staging.consume(events, progress=False)


def test_put_then_get_round_trip_is_verified_and_writes_the_manifest_last(s3_env, bucket, rclone, tmp_path):
    src = tmp_path / "src"
    expected = make_tree(src)
    put = consume(staging.put(str(src), f"s3://{bucket}/set", part_size=PART, concurrency=4))
    assert put.files == len(expected) and put.manifest == f"s3://{bucket}/set/_MANIFEST.json"
    stored = Path(str(rclone.extra["root"])) / bucket / "set"
    manifest = json.loads((stored / staging.MANIFEST).read_text())
    assert manifest["format"] == staging.MANIFEST_FORMAT
    assert manifest["files"]["big.bin"]["size"] == 12 * MiB and manifest["files"]["big.bin"]["etag"].endswith("-3")
    assert set(manifest["files"]) == set(expected)
    got = consume(staging.get(f"s3://{bucket}/set", str(tmp_path / "out"), part_size=PART))
    assert got.files == len(expected) and tree_hashes(tmp_path / "out") == expected
    assert not [p for p in (tmp_path / "out").rglob("*") if staging.TMP_MARK in p.name]


def test_a_second_put_sends_nothing(proxy, bucket, tmp_path):
    src = tmp_path / "src"
    make_tree(src, big=6 * MiB, small=4)
    consume(staging.put(str(src), f"s3://{bucket}/set", part_size=PART))
    before = proxy.count("PUT")
    again = consume(staging.put(str(src), f"s3://{bucket}/set", part_size=PART))
    assert again.files == 0 and again.skipped == 6
    assert proxy.count("PUT") - before == 1  # only the manifest is rewritten
    before = proxy.count("GET")
    consume(staging.get(f"s3://{bucket}/set", str(tmp_path / "out")))
    again = consume(staging.get(f"s3://{bucket}/set", str(tmp_path / "out")))
    assert again.files == 0 and again.skipped == 6


def test_an_interrupted_put_resumes_without_resending_finished_files(proxy, bucket, rclone, tmp_path):
    src = tmp_path / "src"
    expected = make_tree(src, big=11 * MiB, small=9)
    events = staging.put(str(src), f"s3://{bucket}/set", part_size=PART, concurrency=1)
    finished = []
    for event in events:
        if event.kind == "file":
            finished.append(event.subject)
            if len(finished) == 3:
                break
    events.close()  # the user pressed Ctrl-C
    stored = Path(str(rclone.extra["root"])) / bucket / "set"
    assert not (stored / staging.MANIFEST).exists()  # a reader sees the set is incomplete
    for path in stored.rglob("*"):
        if path.is_file():  # every object under its final key is whole
            assert hashlib.sha256(path.read_bytes()).hexdigest() == expected[str(path.relative_to(stored))]
    proxy.requests.clear()
    result = consume(staging.put(str(src), f"s3://{bucket}/set", part_size=PART))
    assert result.skipped >= 3 and result.files == len(expected) - result.skipped
    for rel in finished:
        assert proxy.count("PUT", f"/set/{rel}") == 0, rel
    assert tree_hashes(stored) == expected and (stored / staging.MANIFEST).exists()


def test_resets_503s_and_cut_responses_still_give_identical_files(rclone, bucket, tmp_path, monkeypatch, fast_retry):
    src = tmp_path / "src"
    expected = make_tree(src, big=16 * MiB, small=10)
    with FaultProxy(rclone.port, Faults(reset=0.12, error_503=0.12, cut=0.12, seed=99)) as px:
        for key, value in s3_servers.aws_env(rclone, px.url).items():
            monkeypatch.setenv(key, value)
        consume(staging.put(str(src), f"s3://{bucket}/set", part_size=PART, retry=fast_retry))
        consume(staging.get(f"s3://{bucket}/set", str(tmp_path / "out"), part_size=PART, retry=fast_retry))
        kinds = px.faults_by_kind()
    assert kinds["reset"] and kinds["503"] and kinds["cut"]
    stored = Path(str(rclone.extra["root"])) / bucket / "set"
    assert tree_hashes(stored) == expected and tree_hashes(tmp_path / "out") == expected


def test_multipart_etags_from_moto_are_checked_on_download(moto, tmp_path, monkeypatch):
    for key, value in s3_servers.aws_env(moto).items():
        monkeypatch.setenv(key, value)
    from nbplugins.storage import s3

    s3.resolve().client().create_bucket(Bucket="moto-staging")
    data = os.urandom(11 * MiB)
    (tmp_path / "one.bin").write_bytes(data)
    consume(staging.put(str(tmp_path / "one.bin"), "s3://moto-staging/x/one.bin", part_size=PART))
    head = s3.resolve().client().head_object(Bucket="moto-staging", Key="x/one.bin")
    assert head["ETag"].strip('"').endswith("-3")
    consume(staging.get("s3://moto-staging/x/one.bin", str(tmp_path / "back.bin")))
    assert (tmp_path / "back.bin").read_bytes() == data


def test_a_corrupted_object_is_retried_then_reported_and_nothing_is_left(s3_env, bucket, rclone, tmp_path):
    src = tmp_path / "src"
    make_tree(src, big=6 * MiB, small=2)
    consume(staging.put(str(src), f"s3://{bucket}/set", part_size=PART))
    victim = Path(str(rclone.extra["root"])) / bucket / "set" / "big.bin"
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0xFF  # bit rot on the server: same size, other bytes
    victim.write_bytes(bytes(raw))
    events = list_events = []
    with pytest.raises(StorageError, match="big.bin: (MD5|XXH3-128) .* says .*gave up after 3 attempts"):
        for event in staging.get(f"s3://{bucket}/set", str(tmp_path / "out")):
            list_events.append(event)
    assert [e for e in events if e.kind == "retry"]
    assert not (tmp_path / "out" / "big.bin").exists()
    assert not [p for p in (tmp_path / "out").rglob("*") if staging.TMP_MARK in p.name]


# ----------------------------------------------------------------------------- bad input


def cli(*args: str, preexec=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbplugins", *args], capture_output=True, text=True,
                          timeout=120, preexec_fn=preexec, env={**os.environ, **(env or {})})


def test_a_local_file_where_a_directory_is_expected(s3_env, bucket, tmp_path):
    src = tmp_path / "src"
    make_tree(src, big=1 * MiB, small=2)
    consume(staging.put(str(src), f"s3://{bucket}/set"))
    blocker = tmp_path / "out"
    blocker.write_text("I am a file")
    with pytest.raises(StorageError, match="is a file, expected a directory"):
        consume(staging.get(f"s3://{bucket}/set", str(blocker)))
    assert blocker.read_text() == "I am a file"


def test_a_key_escaping_the_destination_is_refused_before_anything_is_written(moto, tmp_path, monkeypatch):
    for key, value in s3_servers.aws_env(moto).items():
        monkeypatch.setenv(key, value)
    from nbplugins.storage import s3

    client = s3.resolve().client()
    client.create_bucket(Bucket="moto-escape")
    client.put_object(Bucket="moto-escape", Key="set/ok.txt", Body=b"fine")
    client.put_object(Bucket="moto-escape", Key="set/../../evil.txt", Body=b"gotcha")
    out = tmp_path / "deep" / "out"
    with pytest.raises(StorageError, match="escapes the destination"):
        consume(staging.get("s3://moto-escape/set", str(out)))
    assert not out.exists() and not (tmp_path / "evil.txt").exists()


def test_wrong_keys_missing_bucket_and_endpoint_down_are_one_line_errors(rclone, bucket, tmp_path, canary):
    (tmp_path / "a.txt").write_text("data")
    env = s3_servers.aws_env(rclone)
    wrong = cli("data", "put", "-q", str(tmp_path / "a.txt"), f"s3://{bucket}/a.txt",
                env={**env, "AWS_SECRET_ACCESS_KEY": canary})
    assert wrong.returncode == 1 and "nbplugins: error:" in wrong.stderr
    assert "secret key is wrong" in wrong.stderr or "access denied" in wrong.stderr
    assert canary not in wrong.stderr + wrong.stdout
    missing = cli("data", "get", "-q", "s3://no-such-bucket-here/x/", str(tmp_path / "o"), env=env)
    assert missing.returncode == 1 and "bucket does not exist" in missing.stderr
    from tests.servers.harness import free_port

    down = cli("data", "put", "-q", str(tmp_path / "a.txt"), f"s3://{bucket}/a.txt",
               env={**env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}", "NBPLUGINS_RETRY_DEADLINE": "2"})
    assert down.returncode == 1 and "could not connect to the endpoint" in down.stderr.lower()
    for result in (wrong, missing, down):
        assert len(result.stderr.strip().splitlines()) <= 3 and "Traceback" not in result.stderr
        assert str(rclone.extra["secret_key"]) not in result.stderr


def test_disk_full_during_get_leaves_nothing_half_written(s3_env, bucket, tmp_path):
    data = os.urandom(8 * MiB)
    (tmp_path / "big.bin").write_bytes(data)
    consume(staging.put(str(tmp_path / "big.bin"), f"s3://{bucket}/big.bin"))
    out = tmp_path / "out"
    out.mkdir()

    def limit() -> None:  # the file-size limit makes write() fail with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MiB, 2 * MiB))

    result = cli("data", "get", "-q", f"s3://{bucket}/big.bin", str(out / "big.bin"), preexec=limit)
    assert result.returncode == 1 and "cannot write" in result.stderr and "File too large" in result.stderr
    assert list(out.iterdir()) == []


def test_cli_shows_progress_and_keys_stay_out_of_logs(s3_env, bucket, tmp_path, rclone, caplog):
    make_tree(tmp_path / "src", big=6 * MiB, small=3)
    result = cli("-v", "data", "put", str(tmp_path / "src"), f"s3://{bucket}/cli")
    assert result.returncode == 0, result.stderr
    assert "files" in result.stderr and "B/s" in result.stderr or "MiB" in result.stdout
    assert "5 files" in result.stdout and "manifest s3://" in result.stdout
    secret = str(rclone.extra["secret_key"])
    assert secret not in result.stdout + result.stderr
    caplog.set_level("DEBUG")
    secrets.install_log_redaction()
    consume(staging.get(f"s3://{bucket}/cli", str(tmp_path / "back")))
    assert secret not in caplog.text


# ----------------------------------------------------------------------------- fast paths keep the checks


def test_a_plain_md5_etag_over_many_parts_is_hashed_in_order_and_checked(s3_env, bucket, rclone, tmp_path):
    stored = Path(str(rclone.extra["root"])) / bucket / "plain"
    stored.mkdir(parents=True)
    data = os.urandom(13 * MiB)  # written by another tool: no manifest, the listing's ETag is the plain MD5
    (stored / "big.bin").write_bytes(data)
    got = consume(staging.get(f"s3://{bucket}/plain", str(tmp_path / "out"), part_size=PART))
    assert got.files == 1 and (tmp_path / "out" / "big.bin").read_bytes() == data
    manifest = json.loads((tmp_path / "out" / staging.MANIFEST).read_text())
    assert manifest["files"]["big.bin"] == {"size": 13 * MiB, "etag": hashlib.md5(data).hexdigest(), "part_size": None}
    events = staging.get(f"s3://{bucket}/plain", str(tmp_path / "again"), part_size=PART)
    seen = []
    with pytest.raises(StorageError, match="big.bin: (MD5|XXH3-128) .* says .*gave up after 3 attempts"):
        for event in events:
            seen.append(event.kind)
            if event.kind == "plan":  # listed with the right ETag; the bytes then rot on the server
                raw = bytearray(data)
                raw[7 * MiB + 3] ^= 0xFF
                (stored / "big.bin").write_bytes(bytes(raw))
    assert "retry" in seen
    assert not (tmp_path / "again" / "big.bin").exists()
    assert not [p for p in (tmp_path / "again").rglob("*") if staging.TMP_MARK in p.name]


@pytest.mark.parametrize("split", [staging_s3.MAX_LIST_SPLIT, 1])
def test_folders_listed_in_parallel_miss_nothing_even_those_missing_from_the_manifest(
        s3_env, bucket, rclone, tmp_path, monkeypatch, split):
    monkeypatch.setattr(staging_s3, "MAX_LIST_SPLIT", split)  # 1: more folders than that, one flat listing
    src = tmp_path / "src"
    expected = make_tree(src, big=1 * MiB, small=6)
    consume(staging.put(str(src), f"s3://{bucket}/set"))
    from nbplugins.storage import s3

    client = s3.resolve().client()  # objects added after the manifest was written
    client.put_object(Bucket=bucket, Key="set/later/deep/new.txt", Body=b"late")
    client.put_object(Bucket=bucket, Key="set/zz.txt", Body=b"top")
    expected.update({"later/deep/new.txt": hashlib.sha256(b"late").hexdigest(),
                     "zz.txt": hashlib.sha256(b"top").hexdigest()})
    got = consume(staging.get(f"s3://{bucket}/set", str(tmp_path / "out")))
    assert got.files == len(expected) and tree_hashes(tmp_path / "out") == expected


# ----------------------------------------------------------------------------- mirroring sync


def test_sync_delete_makes_the_destination_mirror_the_source_both_ways(s3_env, bucket, rclone, tmp_path):
    src = tmp_path / "src"
    make_tree(src, big=6 * MiB, small=4)
    consume(staging.put(str(src), f"s3://{bucket}/m/", part_size=PART))
    (src / "sub" / "f1.dat").unlink()
    (src / "new.txt").write_text("new")
    done = cli("data", "sync", "-q", "--delete", str(src), f"s3://{bucket}/m/", env=s3_env)
    assert done.returncode == 0, done.stderr
    assert "1 deleted" in done.stdout and "1 files" in done.stdout
    served = Path(str(rclone.extra["root"])) / bucket / "m"
    assert tree_hashes(served) == tree_hashes(src)
    manifest = json.loads((served / staging.MANIFEST).read_text())["files"]
    assert "sub/f1.dat" not in manifest and "new.txt" in manifest
    # and back: a local mirror loses what the bucket does not have, but not another run's temp files
    out = tmp_path / "out"
    consume(staging.get(f"s3://{bucket}/m/", str(out)))
    (out / "stray.bin").write_bytes(b"not in the bucket")
    (out / f".x.bin{staging.TMP_MARK}1234abcd").write_bytes(b"another run's part")
    summary = consume(staging.sync(f"s3://{bucket}/m/", str(out), delete=True))
    assert summary.deleted == 1 and not (out / "stray.bin").exists()
    assert (out / f".x.bin{staging.TMP_MARK}1234abcd").exists()
    assert tree_hashes(out) == {**tree_hashes(src), f".x.bin{staging.TMP_MARK}1234abcd": hashlib.sha256(
        b"another run's part").hexdigest()}


def test_sync_delete_deletes_nothing_when_the_transfer_fails_or_the_source_is_one_file(s3_env, bucket, rclone,
                                                                                      tmp_path):
    src = tmp_path / "src"
    make_tree(src, big=1 * MiB, small=2)
    consume(staging.put(str(src), f"s3://{bucket}/f/"))
    out = tmp_path / "out"
    consume(staging.get(f"s3://{bucket}/f/", str(out)))
    (out / "keep-me.txt").write_text("local only")
    served = Path(str(rclone.extra["root"])) / bucket / "f" / "big.bin"
    rotten = bytearray(served.read_bytes())
    rotten[3] ^= 1
    served.write_bytes(bytes(rotten))
    (out / "big.bin").unlink()
    with pytest.raises(StorageError, match="big.bin"):
        consume(staging.sync(f"s3://{bucket}/f/", str(out), delete=True))
    assert (out / "keep-me.txt").exists()
    with pytest.raises(StorageError, match="--delete mirrors a directory"):
        consume(staging.sync(str(src / "empty.txt"), str(out / "empty.txt"), delete=True))
    assert (out / "keep-me.txt").exists()


# ----------------------------------------------------------------------------- resumable multipart uploads


def _interrupt_after_parts(events, rel: str, parts: int) -> None:
    seen = 0
    for event in events:
        if event.kind == "bytes" and event.subject == rel:
            seen += 1
            if seen == parts:
                break
    events.close()  # Ctrl-C, or the hub culling the server


def test_an_interrupted_multipart_upload_resumes_sending_only_the_missing_parts(proxy, bucket, rclone, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = tmp_path / "big.bin"
    data = os.urandom(6 * PART)
    src.write_bytes(data)
    _interrupt_after_parts(staging.put(str(src), f"s3://{bucket}/r/big.bin", part_size=PART, concurrency=1),
                           "big.bin", 3)
    (state,) = (tmp_path / "cache" / "nbplugins" / "uploads").glob("*.json")
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    served = Path(str(rclone.extra["root"])) / bucket / "r" / "big.bin"
    assert not served.exists()  # nothing under the final key until the upload completes
    proxy.requests.clear()
    consume(staging.put(str(src), f"s3://{bucket}/r/big.bin", part_size=PART))
    assert proxy.count("PUT", "partNumber=") == 3 and proxy.count("POST", "uploads") == 0
    assert served.read_bytes() == data and not state.exists()


def test_a_source_changed_since_the_interruption_is_uploaded_again_whole(proxy, bucket, rclone, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 * PART))
    _interrupt_after_parts(staging.put(str(src), f"s3://{bucket}/c/big.bin", part_size=PART, concurrency=1),
                           "big.bin", 2)
    changed = os.urandom(4 * PART)
    src.write_bytes(changed)
    os.utime(src, ns=(1, 10**18))
    proxy.requests.clear()
    consume(staging.put(str(src), f"s3://{bucket}/c/big.bin", part_size=PART))
    assert proxy.count("PUT", "partNumber=") == 4 and proxy.count("DELETE", "uploadId=") == 1
    assert (Path(str(rclone.extra["root"])) / bucket / "c" / "big.bin").read_bytes() == changed
    assert not list((tmp_path / "cache" / "nbplugins" / "uploads").glob("*.json"))


def test_a_local_to_local_sync_skips_identical_files_and_replaces_changed_ones(tmp_path):
    src, dest = tmp_path / "a", tmp_path / "b"
    src.mkdir()
    (src / "same.txt").write_text("same")
    (src / "changed.txt").write_text("one")
    staging.consume(staging.sync(str(src), str(dest)), progress=False)
    (src / "changed.txt").write_text("two")
    again = staging.consume(staging.sync(str(src), str(dest)), progress=False)
    assert (again.files, again.skipped, again.replaced) == (1, 1, 1)
    assert (dest / "changed.txt").read_text() == "two"
