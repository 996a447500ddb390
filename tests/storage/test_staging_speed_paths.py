"""The fast download path: bodies read past http.client straight into the block buffer, local files
written in page-cache-friendly slices; every guarantee kept (whole bytes, short reads retried on a
new connection, read timeouts, checksums, atomic publish), against a keep-alive server that can
cut, stall, dribble, lie about checksums or ignore Range."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbplugins.errors import StorageError
from nbplugins.retry import Retry
from nbplugins.storage import s3, s3wire, staging
from nbplugins.storage.staging import local
from nbplugins.storage.staging.endpoint import retryable
from tests.servers import s3 as s3_servers
from tests.servers.faultproxy import FaultProxy

MiB = 1 << 20
RANGE = re.compile(r"bytes=(\d+)-(\d+)")


class _Objects(http.server.BaseHTTPRequestHandler):
    """One object over HTTP/1.1 keep-alive, Range honoured unless told not to, and a queue of faults.

    ``faults``: what the next GETs do (``cut``: half the body then hang up; ``stall``: half the
    body then silence; ``dribble``: the body in 1000-byte writes); ``etag``: what HEAD and GET say.
    """

    protocol_version = "HTTP/1.1"
    body = b""
    etag = ""
    ignore_range = False
    faults: list[str] = []
    gets: list[tuple[str, int]] = []  # (Range asked, client port: one per connection)
    stall = 3.0

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("ETag", f'"{self.etag}"')
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        asked = self.headers.get("Range", "")
        type(self).gets.append((asked, self.client_address[1]))
        fault = self.faults.pop(0) if self.faults else ""
        match = RANGE.fullmatch(asked)
        if match and not self.ignore_range:
            first, last = int(match[1]), min(int(match[2]), len(self.body) - 1)
            data = self.body[first:last + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(self.body)}")
        else:
            data = self.body
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{self.etag}"')
        self.end_headers()
        with contextlib.suppress(ConnectionError):
            if fault in ("cut", "stall"):
                self.wfile.write(data[:len(data) // 2])
                if fault == "stall":
                    time.sleep(self.stall)
                self.close_connection = True
                return
            step = 1000 if fault == "dribble" else len(data) or 1
            for start in range(0, len(data), step):
                self.wfile.write(data[start:start + step])

    def log_message(self, *args: object) -> None:
        pass


class _Quiet(http.server.ThreadingHTTPServer):
    """A threaded server that keeps quiet when a client hangs up on it (the tests make clients do so)."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture
def objects() -> Iterator[str]:
    """The server's URL; the object is 3 MiB + 7 bytes (not a multiple of a block or a write slice)."""
    _Objects.body = os.urandom(3 * MiB + 7)
    _Objects.etag = hashlib.md5(_Objects.body).hexdigest()
    _Objects.ignore_range, _Objects.faults, _Objects.gets = False, [], []
    server = _Quiet(("127.0.0.1", 0), _Objects)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _wire(url: str, **settings: object) -> s3wire.ObjectWire:
    return s3wire.ObjectWire(s3.S3Settings(name="t", endpoint_url=url, region="us-east-1", access_key_id="k",
                                           secret_access_key="s", **settings))


def _read(wire: s3wire.ObjectWire, offset: int, length: int) -> bytes:
    return b"".join(bytes(view) for view in wire.get("b", "obj", offset, length))


def _get(url: str, dest: str, monkeypatch, **options: object) -> staging.Summary:
    for name, value in {"AWS_ENDPOINT_URL_S3": url, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(name, value)
    retry = Retry(deadline=60, initial=0.01, cap=0.05, error_budget=8)
    return staging.consume(staging.get("s3://b/obj", dest, retry=retry, **options), progress=False)


def _connections() -> int:
    return len({port for _, port in _Objects.gets})


def test_ranges_read_past_http_clients_reader_arrive_whole_on_one_kept_alive_connection(objects):
    body = _Objects.body
    wire = _wire(objects)
    try:
        # a few bytes (all of them already in http.client's buffer with the headers), a range over
        # several blocks from an odd offset (its first few KiB in that buffer too), the whole
        # object, and a body sent 1000 bytes at a time
        assert _read(wire, 0, 100) == body[:100]
        assert _read(wire, 12345, 2 * MiB + 3) == body[12345:12345 + 2 * MiB + 3]
        assert _read(wire, 0, len(body)) == body
        _Objects.faults = ["dribble"]
        assert _read(wire, 7, MiB + 1) == body[7:MiB + 8]
        assert wire.head_object(Bucket="b", Key="obj")["ContentLength"] == len(body)  # the connection is clean
        assert len(_Objects.gets) == 4 and _connections() == 1
    finally:
        wire.close()


def test_a_server_that_ignores_range_still_gives_a_whole_object_and_keeps_the_connection(objects):
    _Objects.ignore_range = True
    wire = _wire(objects)
    try:
        assert _read(wire, 0, len(_Objects.body)) == _Objects.body
        assert _read(wire, 0, len(_Objects.body)) == _Objects.body
        with pytest.raises(StorageError, match="ignores Range"):  # a part of it: refused at once
            _read(wire, 0, 100)
        assert len(_Objects.gets) == 3 and _connections() == 1
    finally:
        wire.close()


def test_a_body_cut_short_is_a_retryable_short_read_and_the_connection_is_dropped(objects):
    _Objects.faults = ["cut"]
    wire = _wire(objects)
    try:
        with pytest.raises(http.client.IncompleteRead) as info:
            _read(wire, 0, len(_Objects.body))
        assert retryable(info.value)
        assert _read(wire, 0, 1000) == _Objects.body[:1000]  # on a new connection
        assert _connections() == 2
    finally:
        wire.close()


def test_a_server_that_goes_silent_mid_body_times_out_instead_of_hanging(objects):
    _Objects.faults, _Objects.stall = ["stall"], 3.0
    wire = _wire(objects, read_timeout=0.3)
    try:
        with pytest.raises(TimeoutError, match="no data for 0.3 s") as info:  # not the hang-up 3 s later
            _read(wire, 0, len(_Objects.body))
        assert retryable(info.value)
        assert _read(wire, 5, 10) == _Objects.body[5:15]  # the socket is replaced, its timeout mode with it
    finally:
        wire.close()


@pytest.mark.parametrize("part_size", [4 * MiB, 1 * MiB], ids=["one-part", "four-parts"])
def test_a_download_cut_short_is_retried_and_lands_whole(objects, tmp_path, monkeypatch, part_size):
    _Objects.faults = ["cut"]
    dest = tmp_path / "out" / "obj"
    summary = _get(objects, str(dest), monkeypatch, part_size=part_size, concurrency=2)
    assert dest.read_bytes() == _Objects.body and summary.files == 1
    assert len(_Objects.gets) == -(-len(_Objects.body) // part_size) + 1  # the cut part once more, nothing else
    assert os.listdir(dest.parent) == ["obj"]  # no temporary file left


@pytest.mark.parametrize("size", [3 * MiB + 7, 12 * MiB + 5], ids=["one-part", "three-parts"])
def test_a_checksum_mismatch_is_still_caught_and_nothing_is_published(objects, tmp_path, monkeypatch, size):
    _Objects.body = os.urandom(size)
    _Objects.etag = hashlib.md5(b"other bytes").hexdigest()  # what the server says the object is
    dest = tmp_path / "out" / "obj"
    with pytest.raises(StorageError, match=r"MD5 .* source says .*gave up after 3 attempts"):
        _get(objects, str(dest), monkeypatch, part_size=5 * MiB)
    assert len(_Objects.gets) == 3 * -(-size // (5 * MiB))  # every part, three times
    assert not dest.parent.exists() or not os.listdir(dest.parent)


def test_local_writes_go_in_slices_and_land_whole(tmp_path, monkeypatch):
    """A local-to-local copy of an odd size: every pwrite is at most WRITE_SLICE bytes, the file is the source."""
    data = os.urandom(2 * MiB + 12345)
    (tmp_path / "src.bin").write_bytes(data)
    sizes: list[int] = []
    real = os.pwrite

    def counting(fd: int, block: object, offset: int) -> int:
        sizes.append(len(memoryview(block)))  # type: ignore[arg-type]
        return real(fd, block, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(local.os, "pwrite", counting)
    staging.consume(staging.transfer(str(tmp_path / "src.bin"), str(tmp_path / "dest.bin")), progress=False)
    assert (tmp_path / "dest.bin").read_bytes() == data
    assert max(sizes) <= local.WRITE_SLICE and sum(sizes) == len(data)


class _CutTheCompletion(FaultProxy):
    """Cuts the answer to the second POST it sees: CompleteMultipartUpload, after CreateMultipartUpload."""

    posts = 0

    def _decide(self, method: str) -> str | None:
        if method != "POST":
            return None
        self.posts += 1
        return "cut" if self.posts == 2 else None


def test_a_completed_upload_whose_answer_was_lost_is_recognised_by_its_etag(rclone, bucket, tmp_path, monkeypatch):
    """The retried CompleteMultipartUpload hears NoSuchUpload; the object there has our parts' ETag: done."""
    data = os.urandom(12 * MiB + 3)
    (tmp_path / "big.bin").write_bytes(data)
    with _CutTheCompletion(rclone.port) as proxy:
        for key, value in s3_servers.aws_env(rclone, proxy.url).items():
            monkeypatch.setenv(key, value)
        retry = Retry(deadline=60, initial=0.01, cap=0.05, error_budget=8)
        staging.consume(staging.put(str(tmp_path / "big.bin"), f"s3://{bucket}/x/big.bin", part_size=5 * MiB,
                                    retry=retry), progress=False)
        assert proxy.count("POST", fault="cut") == 1 and proxy.count("POST") == 3  # create, complete, complete
    assert (Path(str(rclone.extra["root"])) / bucket / "x" / "big.bin").read_bytes() == data
