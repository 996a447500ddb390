"""The direct S3 wire: SigV4 as AWS publishes it and as botocore signs it, answers shaped like botocore's, real
servers (and a plain web server that ignores Range)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import http.server
import logging
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import boto3
import pytest

from nbplugins import storage
from nbplugins.errors import StorageError, TransientError
from nbplugins.retry import Retry
from nbplugins.storage import s3, s3wire, staging
from nbplugins.storage.staging.endpoint import retryable
from nbplugins.storage.staging.s3 import S3Endpoint
from tests.servers import harness
from tests.servers.onedata import make_certificate

MiB = 1 << 20
EXAMPLE = s3wire.Signer("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1")
DAY = dt.datetime(2013, 5, 24, tzinfo=dt.UTC)
HOST = {"host": "examplebucket.s3.amazonaws.com"}
EMPTY = hashlib.sha256(b"").hexdigest()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


# ----------------------------------------------------------------------------- signing: AWS's own examples


@pytest.mark.parametrize(("method", "path", "query", "headers", "payload", "signature"), [
    ("GET", "/test.txt", {}, {"range": "bytes=0-9"}, EMPTY,
     "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    ("PUT", quote("/test$file.text", safe="/~"), {},
     {"date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY"},
     hashlib.sha256(b"Welcome to Amazon S3.").hexdigest(),
     "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
    ("GET", "/", {"lifecycle": ""}, {}, EMPTY, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    ("GET", "/", {"max-keys": "2", "prefix": "J"}, {}, EMPTY,
     "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
], ids=["get-object-range", "put-object", "get-bucket-lifecycle", "list-objects"])
def test_signatures_match_the_examples_aws_publishes(method, path, query, headers, payload, signature):
    signed = EXAMPLE.sign(method, path, query, {**HOST, **headers}, payload_hash=payload, now=DAY)
    assert signed["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/")
    assert signed["Authorization"].endswith(f"Signature={signature}")


# ----------------------------------------------------------------------------- against real servers


@pytest.fixture
def wire(s3_env) -> s3wire.ObjectWire:
    settings = s3.resolve()
    assert s3wire.usable(settings)
    w = s3wire.ObjectWire(settings)
    yield w
    w.close()


ODD_KEYS = ["plain.txt", "with space/and+plus.bin", "ünï/cödé~.dat", "percent%20sign&amp=1.txt", "deep/a/b/c/d.txt"]


def test_objects_round_trip_with_awkward_keys_through_a_server_that_checks_sigv4(wire, bucket, rclone):
    for i, key in enumerate(ODD_KEYS):
        data = os.urandom(1000 + i)
        etag = wire.put(bucket, key, data, md5_b64(data))
        assert etag.strip('"') == hashlib.md5(data).hexdigest()
        assert b"".join(bytes(b) for b in wire.get(bucket, key, 10, 500)) == data[10:510]
        head = wire.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == len(data) and head["ETag"] == etag
        assert wire.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert (rclone.extra["root"] and os.path.isfile(os.path.join(str(rclone.extra["root"]), bucket, ODD_KEYS[1])))


def test_listings_answer_what_botocore_answers(wire, moto):
    client = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="a",
                          aws_secret_access_key="b")
    name = f"l-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    for key in ODD_KEYS + [f"many/k{i:03d}" for i in range(25)]:
        client.put_object(Bucket=name, Key=key, Body=key.encode())
    moto_wire = s3wire.ObjectWire(s3.S3Settings(name="moto", endpoint_url=moto.url, region="us-east-1",
                                                access_key_id="a", secret_access_key="b"))

    def pages(fn, **kw):
        out, token = [], None
        while True:
            page = fn(Bucket=name, **kw, **({"ContinuationToken": token} if token else {}))
            out.append(({c["Key"]: (c["Size"], c["ETag"]) for c in page.get("Contents", [])},
                        [p["Prefix"] for p in page.get("CommonPrefixes", [])]))
            token = page.get("NextContinuationToken")
            if not page["IsTruncated"]:
                return out

    for kw in ({"Prefix": ""}, {"Prefix": "", "Delimiter": "/"}, {"Prefix": "many/", "MaxKeys": 7}):
        assert pages(moto_wire.list_objects_v2, **kw) == pages(client.list_objects_v2, **kw)
    assert len(pages(moto_wire.list_objects_v2, Prefix="many/", MaxKeys=7)) == 4
    moto_wire.close()


def test_multipart_upload_control_calls_and_their_errors(wire, bucket):
    key = "mp/object.bin"
    parts = [os.urandom(5 * MiB), os.urandom(123)]
    upload = wire.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"nbplugins-part-size": str(5 * MiB)})
    etags = [wire.put(bucket, key, p, md5_b64(p), upload_id=upload["UploadId"], part_number=i + 1)
             for i, p in enumerate(parts)]
    done = wire.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(etags)]})
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
    assert done["ETag"].strip('"') == expected
    assert wire.head_object(Bucket=bucket, Key=key)["Metadata"] == {"nbplugins-part-size": str(5 * MiB)}
    aborted = wire.create_multipart_upload(Bucket=bucket, Key="mp/aborted")
    wire.abort_multipart_upload(Bucket=bucket, Key="mp/aborted", UploadId=aborted["UploadId"])
    with pytest.raises(s3wire.S3Error) as info:
        wire.put(bucket, "x", b"body", md5_b64(b"other body"))
    assert info.value.response["Error"]["Code"] == "BadDigest" and retryable(info.value)
    for call, code in ((lambda: list(wire.get(bucket, "missing", 0, 10)), "NoSuchKey"),
                       (lambda: wire.head_bucket(Bucket=f"no-{uuid.uuid4().hex[:8]}"), "404"),
                       (lambda: wire.get_object(Bucket=f"no-{uuid.uuid4().hex[:8]}", Key="k"), "NoSuchBucket")):
        with pytest.raises(s3wire.S3Error) as info:
            call()
        assert info.value.response["Error"]["Code"] == code and not retryable(info.value)


def test_wrong_secret_is_refused_and_never_shown(s3_env, bucket, rclone, canary, caplog):
    settings = s3.resolve()
    bad = s3wire.ObjectWire(s3.S3Settings(**{**settings.__dict__, "secret_access_key": canary}))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(s3wire.S3Error) as info:
        bad.put(bucket, "k", b"x", md5_b64(b"x"))
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert canary not in str(info.value) and canary not in caplog.text
    assert "secret key is wrong" in str(s3.storage_error(info.value, "put"))
    bad.close()


def test_a_kept_alive_connection_the_peer_dropped_is_replaced_once(wire, bucket):
    wire.put(bucket, "alive", b"first", md5_b64(b"first"))
    (conn,) = wire._local.pool.values()
    conn.sock.shutdown(socket.SHUT_RDWR)  # as when the server closes an idle connection
    assert wire.put(bucket, "alive", b"second", md5_b64(b"second")).strip('"') == hashlib.md5(b"second").hexdigest()
    (fresh,) = wire._local.pool.values()
    assert fresh is not conn and fresh.sock is not None and wire._all == [fresh]


def test_endpoint_down_is_transient_and_names_the_endpoint(s3_env, canary):
    port = harness.free_port()
    down = s3wire.ObjectWire(s3.S3Settings(name="d", endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1",
                                           access_key_id="k", secret_access_key=canary))
    with pytest.raises(TransientError) as info:
        down.head_bucket(Bucket="b")
    assert f"could not connect to the endpoint http://127.0.0.1:{port}" in str(info.value)
    assert canary not in str(info.value)


def test_keys_from_botocores_own_chain_keep_the_botocore_path(rclone, bucket, tmp_path, monkeypatch):
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(f"[lab]\naws_access_key_id = {rclone.extra['access_key']}\n"
                           f"aws_secret_access_key = {rclone.extra['secret_key']}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", rclone.url)
    loc = storage.locate(f"s3://{bucket}/chain/", None)
    assert loc.s3.credential_source == "botocore chain" and S3Endpoint(loc, Retry()).wire is None
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "big.bin").write_bytes(os.urandom(11 * MiB))
    (src / "small.txt").write_text("small")
    staging.consume(staging.put(str(src), f"s3://{bucket}/chain/", part_size=5 * MiB), progress=False)
    staging.consume(staging.get(f"s3://{bucket}/chain/", str(tmp_path / "back")), progress=False)
    assert (tmp_path / "back" / "d" / "big.bin").read_bytes() == (src / "d" / "big.bin").read_bytes()


def test_staging_over_https_verifies_the_servers_certificate(tmp_path, monkeypatch):
    cert, key = make_certificate(tmp_path)
    port = harness.free_port()
    server = harness.start("moto-s3-tls", [harness.venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port),
                                           "-s", "-c", str(cert), "-k", str(key)],
                           port=port, url=f"https://127.0.0.1:{port}", log_dir=tmp_path)
    try:
        url = f"https://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="a",
                     aws_secret_access_key="b", verify=str(cert)).create_bucket(Bucket="tls")
        config = tmp_path / "config.toml"
        config.write_text(f'[s3.tls]\nendpoint_url = "{url}"\naccess_key_id = "a"\nsecret_access_key = "b"\n'
                          f'ca_bundle = "{cert}"\n')
        monkeypatch.setenv("NBPLUGINS_CONFIG", str(config))
        src = tmp_path / "src"
        src.mkdir()
        (src / "part.bin").write_bytes(os.urandom(6 * MiB))
        (src / "one.txt").write_text("over TLS")
        staging.consume(staging.put(str(src), "s3://tls/set/", profile="tls", part_size=5 * MiB), progress=False)
        staging.consume(staging.get("s3://tls/set/", str(tmp_path / "back"), profile="tls"), progress=False)
        assert (tmp_path / "back" / "part.bin").read_bytes() == (src / "part.bin").read_bytes()
        config.write_text(f'[s3.tls]\nendpoint_url = "{url}"\naccess_key_id = "a"\nsecret_access_key = "b"\n')
        with pytest.raises(Exception, match="(?i)certificate"):
            staging.consume(staging.get("s3://tls/set/", str(tmp_path / "again"), profile="tls"), progress=False)
        assert not (tmp_path / "again" / "part.bin").exists()
    finally:
        server.stop()


def test_uploads_and_downloads_record_and_check_xxh3_in_the_manifest(s3_env, bucket, rclone, tmp_path):
    import json

    import xxhash

    src = tmp_path / "src"
    src.mkdir()
    files = {"big.bin": os.urandom(11 * MiB), "small.bin": os.urandom(3000)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    staging.consume(staging.put(str(src), f"s3://{bucket}/x/", part_size=5 * MiB), progress=False)
    root = Path(str(rclone.extra["root"])) / bucket / "x"
    manifest = json.loads((root / staging.MANIFEST).read_text())["files"]
    assert {k: v["xxh3_128"] for k, v in manifest.items()} == {k: xxhash.xxh3_128(v).hexdigest()
                                                               for k, v in files.items()}
    staging.consume(staging.get(f"s3://{bucket}/x/", str(tmp_path / "back")), progress=False)
    local = json.loads((tmp_path / "back" / staging.MANIFEST).read_text())["files"]
    assert {k: v["xxh3_128"] for k, v in local.items()} == {k: v["xxh3_128"] for k, v in manifest.items()}
    rotten = bytearray(files["small.bin"])
    rotten[7] ^= 1
    (root / "small.bin").write_bytes(bytes(rotten))
    with pytest.raises(Exception, match="small.bin: XXH3-128 .* says .*gave up after 3 attempts"):
        staging.consume(staging.get(f"s3://{bucket}/x/", str(tmp_path / "again")), progress=False)
    assert not (tmp_path / "again" / "small.bin").exists()


def test_a_refusal_sent_while_the_body_is_still_going_is_reported_not_a_broken_pipe(s3_env, bucket, tmp_path,
                                                                                    canary):
    """A server that answers 403 and stops reading a 20 MiB body: its answer, not the reset, is the error."""
    settings = s3.resolve()
    bad = s3wire.ObjectWire(s3.S3Settings(**{**settings.__dict__, "secret_access_key": canary}))
    data = os.urandom(20 * MiB)
    (tmp_path / "big").write_bytes(data)
    fd = os.open(tmp_path / "big", os.O_RDONLY)
    try:
        for send in (lambda: bad.put(bucket, "big", data, md5_b64(data)),
                     lambda: bad.put_file(bucket, "big", fd, 0, len(data), md5_b64(data))):
            with pytest.raises(s3wire.S3Error) as info:
                send()
            assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    finally:
        os.close(fd)
        bad.close()


# ----------------------------------------------------------------------------- signing: botocore's signer, differentially

SIGN_ALPHABET = ("abcXYZ019 +%~/=&?#@!$'()*,;:[]-_.ü€日本\u00a0\t" + "".join(chr(c) for c in range(0x20, 0x7f, 7)))


def _text(rng, lo: int = 0, hi: int = 12) -> str:
    return "".join(rng.choice(SIGN_ALPHABET) for _ in range(rng.randint(lo, hi)))


def _random_request(rng) -> tuple[str, str, dict[str, str], dict[str, str], str | None]:
    """(method, key, query, extra headers, session token): keys, prefixes and query strings people write."""
    key = "/".join(_text(rng, 1, 8) for _ in range(rng.randint(1, 4)))
    kind = rng.randrange(4)
    if kind == 0:  # ListObjectsV2 as the wire sends it
        query = {"list-type": "2", "prefix": _text(rng) + rng.choice(["", "/"]), "encoding-type": "url"}
        if rng.random() < 0.5:
            query["delimiter"] = rng.choice(["/", "=", "+", "%", " "])
        if rng.random() < 0.5:
            query["continuation-token"] = _text(rng, 1, 30)
    elif kind == 1:  # a part of a multipart upload
        query = {"partNumber": str(rng.randint(1, 10_000)), "uploadId": _text(rng, 1, 40)}
    elif kind == 2:
        query = {"uploads": ""} if rng.random() < 0.5 else {}
    else:  # anything: names and values with unicode, spaces, '+', '%', '~', '/', '='
        query = {_text(rng, 1, 6): _text(rng) for _ in range(rng.randint(1, 5))}
    names = ["content-md5", "content-type", "range", "x-amz-meta-part-size", "x-amz-meta-" + "".join(
        rng.choice("abcdefghij-") for _ in range(5)), "x-amz-storage-class"]
    headers = {name: _text(rng, 0, 20).replace("\t", " ").strip() if rng.random() < 0.5 else _text(rng, 0, 20)
               for name in rng.sample(names, rng.randint(0, len(names)))}
    token = _text(rng, 10, 30) if rng.random() < 0.3 else None
    return rng.choice(["GET", "PUT", "POST", "HEAD", "DELETE"]), key, query, headers, token


def test_signatures_match_botocores_on_thousands_of_random_requests(monkeypatch):
    """Our SigV4 against botocore's S3SigV4Auth on the same requests (UNSIGNED-PAYLOAD and signed bodies)."""
    import random

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    now = dt.datetime(2024, 2, 29, 23, 59, 58, tzinfo=dt.UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: now.replace(tzinfo=None))
    rng = random.Random(20240229)
    wires = {(endpoint, path_style): s3wire.ObjectWire(s3.S3Settings(
        name="r", endpoint_url=endpoint, region="us-east-1", access_key_id="k", secret_access_key="s",
        path_style=path_style)) for endpoint in ("http://127.0.0.1:9000", "https://s3.example.org")
        for path_style in (True, False)}
    configs = {signed: Config(s3={"payload_signing_enabled": signed}) for signed in (True, False)}
    for _ in range(3000):
        method, key, query, headers, token = _random_request(rng)
        region = rng.choice(["us-east-1", "eu-west-3", "default"])
        access, secret = _text(rng, 16, 20).replace(" ", "A").replace("/", "B"), _text(rng, 30, 40)
        wire = wires[rng.choice(list(wires))]
        bucket = rng.choice(["bucket", "my.bucket", "b-" + "".join(rng.choice("abc0123") for _ in range(8))])
        host, path = wire._where(bucket, key)
        host_header = host if wire.default_port else f"{host}:{wire.port}"
        body = rng.randbytes(rng.randint(0, 64)) if rng.random() < 0.3 else None
        payload = hashlib.sha256(body or b"").hexdigest() if body is not None else s3wire.UNSIGNED_PAYLOAD
        ours = s3wire.Signer(access, secret, region, token).sign(method, path, query, {"host": host_header, **headers},
                                                                  payload_hash=payload, now=now)
        request = AWSRequest(method=method, url=f"{wire.endpoint.split('://')[0]}://{host_header}{path}",
                             headers={"host": host_header, **headers}, params=query, data=body or b"")
        request.context["client_config"] = configs[body is not None]
        botocore.auth.S3SigV4Auth(Credentials(access, secret, token), "s3", region).add_auth(request)
        assert ours["Authorization"] == request.headers["Authorization"], (method, key, query, headers)
        assert ours["x-amz-content-sha256"] == request.headers["X-Amz-Content-SHA256"]
        sent = f"{path}?{s3wire.canonical_query(query)}" if query else path  # what _send puts on the request line
        assert botocore.auth.S3SigV4Auth(Credentials(access, secret, token), "s3", region)._canonical_query_string_url(
            urlsplit(sent)) == s3wire.canonical_query(query)


# ----------------------------------------------------------------------------- a server that ignores Range


class _IgnoresRange(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and the whole object, as a plain web server in front of files does."""

    protocol_version = "HTTP/1.1"
    body = b""
    gets: list[str] = []

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("ETag", f'"{hashlib.md5(self.body).hexdigest()}"')
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        type(self).gets.append(self.headers.get("Range", ""))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        with contextlib.suppress(ConnectionError):  # the client hangs up once it sees what it got
            self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def ignores_range():
    import threading

    _IgnoresRange.body = os.urandom(6 * MiB + 7)
    _IgnoresRange.gets = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IgnoresRange)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_server_that_ignores_range_is_used_for_whole_objects_and_refused_at_once_for_parts(ignores_range,
                                                                                              tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{ignores_range.server_address[1]}"
    body = _IgnoresRange.body
    wire = s3wire.ObjectWire(s3.S3Settings(name="plain", endpoint_url=url, region="us-east-1", access_key_id="k",
                                           secret_access_key="s"))
    try:
        assert b"".join(bytes(b) for b in wire.get("b", "obj", 0, len(body))) == body  # the range is the object
        for offset in (0, 100):
            with pytest.raises(StorageError, match="ignores Range"):
                list(wire.get("b", "obj", offset, 100))
        assert len(_IgnoresRange.gets) == 3
    finally:
        wire.close()
    for name, value in {"AWS_ENDPOINT_URL_S3": url, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(name, value)
    _IgnoresRange.gets = []
    with pytest.raises(StorageError, match="ignores Range"):  # at once: not retried until the budget runs out
        staging.consume(staging.get("s3://b/obj", str(tmp_path / "out" / "obj"), part_size=5 * MiB, concurrency=1),
                    progress=False)
    assert len(_IgnoresRange.gets) == 1 and not list((tmp_path / "out").iterdir())
