"""OnedataFileSystem against the HTTPS test Onezone+Oneprovider: data, listings, tokens, failures."""

from __future__ import annotations

# ruff: noqa: F811 -- fixtures imported from onedata_fixtures are test parameters
import logging
import os

import fsspec
import pytest

from nbplugins.errors import AuthError, TokenError
from nbplugins.retry import Retry
from nbplugins.storage.onedata import OnedataFileSystem
from tests.storage.onedata_fixtures import onedata_env, onedata_fs, onedata_server  # noqa: F401

MiB = 1 << 20
FAST = Retry(initial=0.05, cap=0.2, deadline=30)


def payload(size: int) -> bytes:
    return (os.urandom(4096) * (size // 4096 + 1))[:size]


def leftovers(fs: OnedataFileSystem, directory: str) -> list[str]:
    return [p for p in fs.ls(directory, detail=False, refresh=True) if ".nbp-" in p]


# ----------------------------------------------------------------------------- data


def test_small_file_round_trip(onedata_fs):
    path = f"{onedata_fs.test_base}/small.txt"
    onedata_fs.pipe_file(path, b"hello onedata")
    assert onedata_fs.cat_file(path) == b"hello onedata"
    info = onedata_fs.info(path)
    assert info["type"] == "file" and info["size"] == 13 and info["file_id"]
    with onedata_fs.open(path, "rb") as handle:
        assert handle.read() == b"hello onedata"


def test_multi_block_file_round_trip_uses_offset_puts_and_block_reads(onedata_fs, onedata_server):
    path = f"{onedata_fs.test_base}/multi.bin"
    data = payload(3 * MiB + 12345)
    onedata_server.reset()
    with onedata_fs.open(path, "wb") as handle:
        for start in range(0, len(data), 100_000):
            handle.write(data[start:start + 100_000])
    puts = onedata_server.counts().get("PUT content", 0)
    assert puts >= 3  # the blocks after the first went as offset PUTs
    assert leftovers(onedata_fs, onedata_fs.test_base) == []
    onedata_server.reset()
    with onedata_fs.open(path, "rb") as handle:
        out = b"".join(iter(lambda: handle.read(64 * 1024), b""))
    assert out == data
    # 64 KiB reads are served from 1 MiB ranged GETs, not one request each
    assert onedata_server.counts().get("GET content", 0) <= 6


def test_ranged_reads(onedata_fs):
    path = f"{onedata_fs.test_base}/ranges.bin"
    data = payload(2 * MiB + 7)
    onedata_fs.pipe_file(path, data)
    assert onedata_fs.cat_file(path, start=10, end=20) == data[10:20]
    assert onedata_fs.cat_file(path, start=MiB - 3, end=MiB + 3) == data[MiB - 3:MiB + 3]
    assert onedata_fs.cat_file(path, start=-5) == data[-5:]
    assert onedata_fs.cat_file(path, start=len(data) + 10, end=len(data) + 20) == b""
    with onedata_fs.open(path, "rb") as handle:
        handle.seek(MiB + 1)
        assert handle.read(100) == data[MiB + 1:MiB + 101]


def test_put_file_and_get_file_round_trip(onedata_fs, tmp_path):
    source = tmp_path / "in.bin"
    data = payload(2 * MiB + 99)
    source.write_bytes(data)
    remote = f"{onedata_fs.test_base}/deep/er/file.bin"
    onedata_fs.put_file(str(source), remote)
    target = tmp_path / "out" / "file.bin"
    onedata_fs.get_file(remote, str(target))
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no partial files left


def test_overwrite_replaces_content_atomically(onedata_fs):
    path = f"{onedata_fs.test_base}/over.bin"
    onedata_fs.pipe_file(path, payload(2 * MiB))
    onedata_fs.pipe_file(path, b"short")
    assert onedata_fs.cat_file(path) == b"short"
    big = payload(3 * MiB + 1)
    onedata_fs.pipe_file(path, big)
    assert onedata_fs.cat_file(path) == big
    fresh = OnedataFileSystem(retry=FAST, skip_instance_cache=True)  # no cached id or listing
    fresh.pipe_file(path, b"third")
    assert onedata_fs.cat_file(path) == b"third"
    assert leftovers(onedata_fs, onedata_fs.test_base) == []


def test_failed_write_leaves_target_untouched_and_no_partial_file(onedata_fs, onedata_server):
    path = f"{onedata_fs.test_base}/atomic.bin"
    onedata_fs.pipe_file(path, b"original")
    onedata_server.fault(count=1, status=403, method="PUT", match="/content")
    with pytest.raises(PermissionError, match="Onedata"), onedata_fs.open(path, "wb") as handle:
        handle.write(payload(3 * MiB))
    assert onedata_fs.cat_file(path) == b"original"
    new = f"{onedata_fs.test_base}/never.bin"
    onedata_server.fault(count=1, status=403, method="PUT", match="/content")
    with pytest.raises(PermissionError), onedata_fs.open(new, "wb") as handle:
        handle.write(payload(3 * MiB))
    assert not onedata_fs.exists(new)
    assert leftovers(onedata_fs, onedata_fs.test_base) == []


def test_exception_inside_with_block_discards_the_write(onedata_fs):
    path = f"{onedata_fs.test_base}/discarded.bin"
    with pytest.raises(RuntimeError), onedata_fs.open(path, "wb") as handle:
        handle.write(payload(2 * MiB))
        raise RuntimeError("the notebook failed")
    assert not onedata_fs.exists(path)
    assert leftovers(onedata_fs, onedata_fs.test_base) == []


def test_append_extends_the_file(onedata_fs):
    path = f"{onedata_fs.test_base}/log.txt"
    onedata_fs.pipe_file(path, b"one\n")
    with onedata_fs.open(path, "ab") as handle:
        handle.write(b"two\n")
    assert onedata_fs.cat_file(path) == b"one\ntwo\n"


def test_exclusive_create_refuses_an_existing_file(onedata_fs):
    path = f"{onedata_fs.test_base}/once.txt"
    onedata_fs.pipe_file(path, b"1", mode="create")
    with pytest.raises(FileExistsError):
        onedata_fs.pipe_file(path, b"2", mode="create")
    assert onedata_fs.cat_file(path) == b"1"


# ----------------------------------------------------------------------------- namespace


def test_listing_of_more_than_1000_entries_follows_pagination(onedata_fs, onedata_server):
    directory = f"{onedata_fs.test_base}/many"
    onedata_fs.mkdir(directory)
    on_disk = onedata_server.space_dir("space1") / directory.split("/", 1)[1]
    for i in range(1234):  # written behind the server's back: 1234 REST creates would be slow
        (on_disk / f"f{i:05d}").write_bytes(b"x" * (i % 7))
    onedata_server.reset()
    entries = onedata_fs.ls(directory, refresh=True)
    assert len(entries) == 1234
    assert {e["name"].rsplit("/", 1)[1] for e in entries} == {f"f{i:05d}" for i in range(1234)}
    assert entries[5]["size"] == 5 and entries[5]["type"] == "file"
    assert onedata_server.counts().get("GET children", 0) == 2  # 1000 + 234


def test_mkdir_with_parents_and_makedirs(onedata_fs):
    deep = f"{onedata_fs.test_base}/a/b/c"
    onedata_fs.mkdir(deep, create_parents=True)
    assert onedata_fs.isdir(f"{onedata_fs.test_base}/a/b")
    with pytest.raises(FileExistsError):
        onedata_fs.mkdir(deep)
    onedata_fs.makedirs(deep, exist_ok=True)
    with pytest.raises(FileNotFoundError):
        onedata_fs.mkdir(f"{onedata_fs.test_base}/x/y", create_parents=False)


def test_delete_file_and_directory(onedata_fs):
    base = onedata_fs.test_base
    onedata_fs.pipe({f"{base}/d/f1": b"1", f"{base}/d/sub/f2": b"2", f"{base}/keep": b"k"})
    onedata_fs.rm_file(f"{base}/keep")
    assert not onedata_fs.exists(f"{base}/keep")
    with pytest.raises(OSError):
        onedata_fs.rm(f"{base}/d")  # not empty, not recursive
    onedata_fs.rm(f"{base}/d", recursive=True)
    assert not onedata_fs.exists(f"{base}/d")
    assert onedata_fs.ls(base, detail=False) == []
    with pytest.raises(FileNotFoundError):
        onedata_fs.cat_file(f"{base}/d/f1")


def test_rename_file_and_directory(onedata_fs):
    base = onedata_fs.test_base
    onedata_fs.pipe({f"{base}/a.txt": b"A", f"{base}/b.txt": b"B", f"{base}/dir/in.txt": b"I"})
    onedata_fs.mv(f"{base}/a.txt", f"{base}/renamed.txt")
    assert onedata_fs.cat_file(f"{base}/renamed.txt") == b"A"
    assert not onedata_fs.exists(f"{base}/a.txt")
    onedata_fs.mv(f"{base}/renamed.txt", f"{base}/b.txt")  # replaces the target, like rename(2)
    assert onedata_fs.cat_file(f"{base}/b.txt") == b"A"
    onedata_fs.mv(f"{base}/dir", f"{base}/moved", recursive=True)
    assert onedata_fs.cat_file(f"{base}/moved/in.txt") == b"I"
    assert sorted(onedata_fs.ls(base, detail=False)) == [f"{base}/b.txt", f"{base}/moved"]


def test_copy_is_server_side_inside_a_space(onedata_fs, onedata_server):
    base = onedata_fs.test_base
    data = payload(2 * MiB)
    onedata_fs.pipe_file(f"{base}/src.bin", data)
    onedata_server.reset()
    onedata_fs.cp_file(f"{base}/src.bin", f"{base}/copy/dst.bin")
    assert onedata_server.counts().get("GET content", 0) == 0
    assert onedata_fs.cat_file(f"{base}/copy/dst.bin") == data


def test_missing_paths_raise_file_not_found(onedata_fs):
    missing = f"{onedata_fs.test_base}/nope.txt"
    assert not onedata_fs.exists(missing)
    with pytest.raises(FileNotFoundError, match="onedata://"):
        onedata_fs.info(missing)
    with pytest.raises(FileNotFoundError):
        onedata_fs.open(missing, "rb")


def test_listing_cache_is_invalidated_by_writes(onedata_fs):
    base = onedata_fs.test_base
    assert onedata_fs.ls(base, detail=False) == []
    onedata_fs.pipe_file(f"{base}/new.txt", b"n")
    assert onedata_fs.ls(base, detail=False) == [f"{base}/new.txt"]
    onedata_fs.pipe_file(f"{base}/new.txt", b"longer")
    assert onedata_fs.info(f"{base}/new.txt")["size"] == 6


def test_modified_and_created(onedata_fs):
    path = f"{onedata_fs.test_base}/t.txt"
    onedata_fs.pipe_file(path, b"t")
    assert onedata_fs.modified(path).year >= 2024
    assert onedata_fs.created(path).year >= 2024


def test_fsspec_open_works_through_the_entry_point(onedata_env, onedata_fs):
    import pandas as pd

    url = f"onedata://{onedata_fs.test_base}/frame.csv"
    with fsspec.open(url, "w") as handle:
        handle.write("a,b\n1,2\n3,4\n")
    frame = pd.read_csv(url)
    assert frame["b"].sum() == 6
    assert type(fsspec.filesystem("onedata")).__name__ == "OnedataFileSystem"


def test_provider_is_found_through_onezone(onedata_env, monkeypatch):
    monkeypatch.delenv("ONEDATA_PROVIDER")
    fs = OnedataFileSystem(retry=FAST, skip_instance_cache=True)
    assert fs.isdir("space2")
    assert fs.provider is None and fs._space_base["space2"] == onedata_env.url


# ----------------------------------------------------------------------------- tokens and failures


def test_token_is_minted_from_the_checkin_token(onedata_env, monkeypatch, make_jwt):
    monkeypatch.delenv("ONEDATA_TOKEN")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="carol@egi.eu"))
    before = onedata_env.minted()["count"]
    fs = OnedataFileSystem(retry=FAST, skip_instance_cache=True)
    fs.pipe_file("space1/minted.txt", b"via Check-in")
    assert fs.cat_file("space1/minted.txt") == b"via Check-in"
    minted = onedata_env.minted()
    assert minted["count"] == before + 1  # one mint, reused for every request
    assert minted["subjects"][-1] == "carol@egi.eu"
    fs.rm_file("space1/minted.txt")


def test_refused_checkin_token_says_onezone_refused_it(onedata_env, monkeypatch, make_jwt):
    monkeypatch.delenv("ONEDATA_TOKEN")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(iss="https://elsewhere.example/realm"))
    fs = OnedataFileSystem(retry=FAST, skip_instance_cache=True)
    with pytest.raises(AuthError, match="Onezone .* refused the Check-in token"):
        fs.ls("space1")


def test_wrong_token_gives_one_clear_error_naming_onedata(onedata_env, monkeypatch, canary):
    monkeypatch.setenv("ONEDATA_TOKEN", canary)
    fs = OnedataFileSystem(retry=FAST, skip_instance_cache=True)
    with pytest.raises(AuthError) as info:
        fs.ls("space1")
    message = str(info.value)
    assert message.startswith("Onedata refused the access token")
    assert "Provided token is not valid" in message
    assert canary not in message


def test_oneclient_token_alone_is_refused_with_a_clear_error(onedata_env, monkeypatch):
    monkeypatch.delenv("ONEDATA_TOKEN")
    monkeypatch.setenv("ONECLIENT_ACCESS_TOKEN", onedata_env.oneclient_token)
    fs = OnedataFileSystem(retry=FAST, skip_instance_cache=True)
    with pytest.raises(TokenError, match="ONECLIENT_ACCESS_TOKEN is a oneclient-only token"):
        fs.ls("space1")
    with pytest.raises(TokenError, match="oneclient-only"):
        OnedataFileSystem(token=onedata_env.oneclient_token, skip_instance_cache=True)


def test_oneclient_limited_token_refused_by_rest_is_explained(onedata_env):
    fs = OnedataFileSystem(token=onedata_env.oneclient_token, retry=FAST, skip_instance_cache=True)
    with pytest.raises(AuthError, match="interface = oneclient.*oneclient-only"):
        fs.ls("space1")


def test_503s_are_retried_and_the_operation_succeeds(onedata_fs, onedata_server):
    path = f"{onedata_fs.test_base}/retry.txt"
    onedata_server.fault(count=3, status=503)
    onedata_fs.pipe_file(path, b"survived")
    onedata_server.fault(count=2, status=503, method="GET", match="/content")
    assert onedata_fs.cat_file(path) == b"survived"


def test_canary_token_never_reaches_logs_or_errors(onedata_env, monkeypatch, canary, caplog, make_jwt):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ONEDATA_TOKEN", canary)
    fs = OnedataFileSystem(retry=FAST, skip_instance_cache=True)
    with pytest.raises(AuthError) as refused:
        fs.pipe_file("space1/x.txt", b"x")
    # a Check-in token carrying the canary, minting a real Onedata token
    monkeypatch.delenv("ONEDATA_TOKEN")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(jti=canary))
    minted_fs = OnedataFileSystem(retry=FAST, skip_instance_cache=True)
    onedata_env.fault(count=1, status=503)
    minted_fs.pipe_file("space1/canary-ok.txt", b"ok")
    minted = minted_fs.tokens.get().value
    minted_fs.rm_file("space1/canary-ok.txt")
    text = caplog.text + str(refused.value) + repr(refused.value)
    assert canary not in text
    assert minted not in text
    assert fs.tokens.get().value == canary  # the canary was really used


# ----------------------------------------------------------------------------- instance cache, garbage, threads, TLS


def test_instances_are_cached_by_fsspec_and_renewed_when_the_config_changes(onedata_env, monkeypatch):
    from fsspec.spec import AbstractFileSystem

    assert type(OnedataFileSystem) is type(AbstractFileSystem)  # fsspec's own caching, no metaclass of ours
    first = fsspec.filesystem("onedata")
    assert fsspec.filesystem("onedata") is first
    monkeypatch.setenv("ONEDATA_BLOCK_SIZE_MIB", "2")
    second = fsspec.filesystem("onedata")
    assert second is not first and second.blocksize == 2 * MiB
    assert fsspec.filesystem("onedata") is second


def test_a_write_nobody_closed_sends_nothing_when_it_is_garbage_collected(onedata_fs, onedata_server, caplog):
    import gc

    path = f"{onedata_fs.test_base}/unclosed.bin"
    handle = onedata_fs.open(path, "wb", block_size=MiB)
    handle.write(payload(3 * MiB))  # a temporary file exists, parts are on their way
    handle.flush()
    for future in handle._pending:
        future.result()
    onedata_server.reset()
    del handle
    gc.collect()
    assert onedata_server.counts() == {}  # no DELETE, no move: nothing from the garbage collector
    assert not onedata_fs.exists(path)
    assert "was never closed" in caplog.text


def test_why_a_request_was_refused_is_kept_per_thread(onedata_env):
    import threading

    fs = OnedataFileSystem(retry=FAST, skip_instance_cache=True)

    class Refused:
        status_code = 401

        @staticmethod
        def json():
            return {"error": {"description": "another thread's reason"}}

    worker = threading.Thread(target=fs._note_refusal, args=(Refused(),))
    worker.start()
    worker.join()
    assert getattr(fs._refusal, "text", "") == ""  # this thread saw no refusal


def test_an_untrusted_certificate_fails_at_once_without_retries(onedata_env):
    import time

    fs = OnedataFileSystem(verify=True, retry=Retry(initial=5, cap=5, deadline=60), skip_instance_cache=True)
    started = time.monotonic()
    with pytest.raises(Exception, match="(?i)certificate"):
        fs.ls("space1")
    assert time.monotonic() - started < 4  # one try: no 5 s backoff
