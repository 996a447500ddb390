"""S3 profiles: config file and AWS_* environment -> endpoint, options, keys; the storage entry point."""

from __future__ import annotations

import pytest

from nbplugins import secrets, storage
from nbplugins.errors import ConfigError, StorageError
from nbplugins.storage import s3


def test_default_profile_comes_from_the_aws_environment(monkeypatch, canary):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic.invalid:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.cl4.du.cesnet.cz")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    st = s3.resolve()
    assert st.endpoint_url == "https://s3.cl4.du.cesnet.cz" and st.region == "eu-central-1"
    assert st.access_key_id == "AKIDEXAMPLE1" and st.credential_source == "environment"
    assert st.checksum == "when_required" and st.path_style  # non-AWS endpoint defaults
    conf = st.botocore_config()
    assert conf["request_checksum_calculation"] == "when_required"
    assert conf["response_checksum_validation"] == "when_required"
    assert conf["retries"]["total_max_attempts"] == 1  # nbplugins.retry owns retrying
    assert secrets.redact(f"oops {canary}") == "oops ***"
    assert canary not in repr(st)


def test_aws_endpoints_keep_botocore_checksums_and_virtual_hosts(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example-1")
    st = s3.resolve()
    assert st.endpoint_url is None and st.checksum == "when_supported" and not st.path_style


def test_named_profiles_from_the_config_file_keep_their_endpoint(tmp_path, monkeypatch, canary):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[storage]
profile = "cesnet"

[s3.cesnet]
endpoint_url = "https://s3.cl4.du.cesnet.cz"
access_key_id = "CESNETKEY01"
secret_access_key = "{canary}"
concurrency = 4
max_pool_connections = 9
part_size_mib = 32
checksum = "when_supported"
""")
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(cfg))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://elsewhere.invalid:9000")
    named = s3.resolve("cesnet")
    assert named.endpoint_url == "https://s3.cl4.du.cesnet.cz" and named.credential_source == "config"
    assert (named.concurrency, named.max_pool_connections, named.part_size) == (4, 9, 32 << 20)
    assert named.checksum == "when_supported"
    opts = named.s3fs_options()
    assert opts["config_kwargs"]["max_pool_connections"] == 9 and opts["max_concurrency"] == 4
    assert secrets.redact(canary) == secrets.MARKER
    # the default profile is [storage] profile, and for it the environment wins
    assert s3.resolve().endpoint_url == "http://elsewhere.invalid:9000"
    with pytest.raises(ConfigError, match="unknown S3 profile 'nope'"):
        s3.resolve("nope")


def test_half_a_key_pair_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE1")
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY"):
        s3.resolve()


def test_filesystem_entry_point_works_against_rclone(s3_env, bucket):
    fs, path = storage.filesystem(f"s3://{bucket}/dir/a.txt")
    fs.pipe_file(path, b"hello")
    assert fs.cat_file(path) == b"hello"
    assert fs.ls(f"{bucket}/dir", detail=False) == [f"{bucket}/dir/a.txt"]


def test_unknown_scheme_and_missing_bucket_are_clear_errors():
    with pytest.raises(StorageError, match="unknown storage scheme 'ftp'"):
        storage.filesystem("ftp://host/x")
    with pytest.raises(StorageError, match="no bucket"):
        storage.filesystem("s3:///key")


def test_the_transfer_client_sends_unsigned_bodies_only_bound_by_a_signed_content_md5(s3_env, bucket):
    import base64
    import hashlib

    import botocore.exceptions

    client = s3.resolve().transfer_client()
    sent: list[dict[str, str]] = []
    client.meta.events.register("before-send.s3", lambda request, **_: sent.append(dict(request.headers)))
    body = b"x" * 100_000
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    client.put_object(Bucket=bucket, Key="unsigned.bin", Body=body, ContentMD5=md5)
    headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in sent[-1].items()}
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"  # no SHA-256 pass over the body
    assert "content-md5" in headers["authorization"].split("SignedHeaders=")[1]  # the MD5 is signed
    assert client.get_object(Bucket=bucket, Key="unsigned.bin")["Body"].read() == body
    with pytest.raises(botocore.exceptions.ClientError, match="BadDigest"):  # a body that is not the signed one
        client.put_object(Bucket=bucket, Key="unsigned.bin", Body=body[:-1] + b"y", ContentMD5=md5)
    assert client.get_object(Bucket=bucket, Key="unsigned.bin")["Body"].read() == body
    plain = s3.resolve().client()  # other clients keep signing bodies over http
    plain.meta.events.register("before-send.s3", lambda request, **_: sent.append(dict(request.headers)))
    plain.put_object(Bucket=bucket, Key="signed.bin", Body=body)
    assert sent[-1]["X-Amz-Content-SHA256"] not in ("UNSIGNED-PAYLOAD", b"UNSIGNED-PAYLOAD")
