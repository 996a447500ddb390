"""The OIDC -> Keystone -> EC2 exchange, against a Keystone test server proven with keystoneauth1."""

from __future__ import annotations

import os
import stat
import uuid

import pytest
import requests
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity.v3 import OidcAccessToken

from nbplugins import secrets
from nbplugins.errors import AuthError
from nbplugins.storage import s3, staging
from tests.storage.conftest import PROJECT


def test_keystone_server_is_what_keystoneauth1_expects(keystone_factory, make_jwt):
    """Plain keystoneauth1 (V3OidcAccessToken + Session) authenticates, scopes and lists EC2 creds."""
    ks = keystone_factory()
    discovery = requests.get(f"{ks.url}/v3", timeout=5).json()
    assert discovery["version"]["id"].startswith("v3") and discovery["version"]["status"] == "stable"
    auth = OidcAccessToken(auth_url=f"{ks.url}/v3", identity_provider="egi.eu", protocol="openid",
                           access_token=make_jwt(sub="alice@egi.eu"), project_id=PROJECT)
    sess = ks_session.Session(auth=auth)
    ref = auth.get_access(sess)
    assert ref.project_id == PROJECT and ref.user_id and ref.auth_token
    assert ref.expires is not None and ref.service_catalog.url_for(service_type="identity").endswith("/v3")
    assert auth.get_user_id(sess) == ref.user_id
    url = f"{ks.url}/v3/users/{ref.user_id}/credentials/OS-EC2"
    assert sess.get(url).json()["credentials"] == []
    created = sess.post(url, json={"tenant_id": PROJECT}).json()["credential"]
    assert created["tenant_id"] == PROJECT and created["access"] and created["secret"]
    assert [c["access"] for c in sess.get(url).json()["credentials"]] == [created["access"]]


def test_keystone_server_refuses_bad_tokens_like_keystone(keystone_factory, make_jwt):
    ks = keystone_factory()
    auth = OidcAccessToken(auth_url=f"{ks.url}/v3", identity_provider="egi.eu", protocol="openid",
                           access_token=make_jwt(lifetime=-60), project_id=PROJECT)
    with pytest.raises(ks_exc.Unauthorized):
        auth.get_access(ks_session.Session(auth=auth))


def _keystone_profile(tmp_path, monkeypatch, ks, endpoint: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[s3.cloud]
endpoint_url = "{endpoint}"
credentials = "keystone"
keystone_url = "{ks.url}/v3"
project_id = "{PROJECT}"
""")
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(cfg))


def test_exchange_reuses_existing_credential_caches_it_0600_and_works_on_s3(
        keystone_factory, make_jwt, rclone, bucket, tmp_path, monkeypatch):
    ks = keystone_factory(seed=((str(rclone.extra["access_key"]), str(rclone.extra["secret_key"])),))
    _keystone_profile(tmp_path, monkeypatch, ks, rclone.url)
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="bob@egi.eu"))
    settings = s3.resolve("cloud")
    assert settings.access_key_id == rclone.extra["access_key"]
    stats = requests.get(f"{ks.url}/_test/stats", timeout=5).json()
    assert stats["counts"].get("create ec2", 0) == 0 and stats["counts"]["list ec2"] == 1
    cached = list(s3.cache_dir().glob("*.json"))
    assert len(cached) == 1 and stat.S_IMODE(os.stat(cached[0]).st_mode) == 0o600
    assert str(rclone.extra["secret_key"]) not in secrets.redact(f"key {rclone.extra['secret_key']}")
    # a second resolve uses the cache: no more Keystone traffic
    s3.resolve("cloud")
    again = requests.get(f"{ks.url}/_test/stats", timeout=5).json()
    assert again["counts"]["federation auth"] == stats["counts"]["federation auth"]
    # and the keys really work against S3
    src = tmp_path / "hello.txt"
    src.write_text("hello from keystone keys")
    staging.run(staging.put(str(src), f"s3://{bucket}/hello.txt", profile="cloud"), progress=False)
    assert (s3.cache_dir().parent.parent / "nbplugins").exists()


def test_exchange_creates_a_credential_when_the_project_has_none(keystone_factory, make_jwt, moto, tmp_path,
                                                                 monkeypatch):
    ks = keystone_factory()
    _keystone_profile(tmp_path, monkeypatch, ks, moto.url)
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub=f"carol-{uuid.uuid4().hex[:6]}@egi.eu"))
    settings = s3.resolve("cloud")
    stats = requests.get(f"{ks.url}/_test/stats", timeout=5).json()
    assert stats["counts"]["create ec2"] == 1 and stats["credentials"] == 1
    assert secrets.redact(settings.secret_access_key) == secrets.MARKER
    client = settings.client()
    client.create_bucket(Bucket="keystone-made")
    client.put_object(Bucket="keystone-made", Key="k", Body=b"x")


def test_exchange_with_a_refused_token_says_so(keystone_factory, make_jwt, tmp_path, monkeypatch, canary):
    ks = keystone_factory()
    _keystone_profile(tmp_path, monkeypatch, ks, "http://127.0.0.1:9")
    import time

    import jwt

    bad = jwt.encode({"sub": "mallory@egi.eu", "exp": int(time.time()) + 600, "jti": canary},
                     f"{canary}-not-the-issuer-key-000000000", algorithm="HS256")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", bad)
    with pytest.raises(AuthError) as info:
        s3.resolve("cloud")
    assert "refused the OIDC token" in str(info.value) and bad not in str(info.value)
    assert not list(s3.cache_dir().glob("*.json")) if s3.cache_dir().exists() else True
