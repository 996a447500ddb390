"""The OIDC -> Keystone -> EC2 exchange, against a Keystone test server proven with keystoneauth1."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import traceback
import uuid
from pathlib import Path

import pytest
import requests
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity.v3 import OidcAccessToken

from nbplugins import config, secrets
from nbplugins.errors import AuthError
from nbplugins.storage import s3, staging
from nbplugins.tokens import StaticToken
from tests.servers.faultproxy import FaultProxy
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
    staging.consume(staging.put(str(src), f"s3://{bucket}/hello.txt", profile="cloud"), progress=False)
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


# ----------------------------------------------------------------------------- cached keys S3 refuses


@pytest.fixture(autouse=True)
def new_process(monkeypatch):
    """Each test starts like a new process (no key pairs remembered); call it to start another."""

    def restart() -> None:
        monkeypatch.setattr(s3, "_fresh", set())
        monkeypatch.setattr(s3, "_checked", set())

    restart()
    return restart


def _keystone_calls(ks) -> dict[str, int]:
    counts = requests.get(f"{ks.url}/_test/stats", timeout=5).json()["counts"]
    return {k: v for k, v in counts.items() if k != "GET /_test/stats"}


def _cache_files() -> list:
    return sorted(s3.cache_dir().glob("*.json")) if s3.cache_dir().exists() else []


def _rclone_pair(rclone) -> tuple[str, str]:
    return str(rclone.extra["access_key"]), str(rclone.extra["secret_key"])


def _watch_logs(caplog) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="nbplugins")


def test_cached_keys_s3_refuses_are_dropped_and_exchanged_again(
        keystone_factory, make_jwt, rclone, bucket, tmp_path, monkeypatch, canary, new_process, caplog):
    """The credential was deleted behind our back: Keystone still lists it first, S3 no longer knows it."""
    dead = (f"AK{canary}", canary)
    ks = keystone_factory(seed=(dead, _rclone_pair(rclone)))
    _keystone_profile(tmp_path, monkeypatch, ks, rclone.url)
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="dave@egi.eu"))
    assert s3.resolve("cloud").access_key_id == dead[0]  # cached as the project's first credential
    new_process()
    _watch_logs(caplog)
    settings = s3.resolve("cloud")
    assert settings.access_key_id == rclone.extra["access_key"]
    calls = _keystone_calls(ks)
    assert calls["list ec2"] == 2 and calls.get("create ec2", 0) == 0
    [cache] = _cache_files()
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert json.loads(cache.read_text())["access"] == rclone.extra["access_key"] and canary not in cache.read_text()
    said = [r for r in caplog.records if "refused the cached EC2 credential" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert canary not in caplog.text
    src = tmp_path / "hello.txt"
    src.write_text("hello again")
    staging.consume(staging.put(str(src), f"s3://{bucket}/hello.txt", profile="cloud"), progress=False)
    assert (Path(str(rclone.extra["root"])) / bucket / "hello.txt").read_text() == "hello again"
    assert _keystone_calls(ks) == calls  # staging's own resolve trusts the pair it just got


def test_a_refused_credential_keystone_still_lists_is_replaced_by_a_new_one(
        keystone_factory, make_jwt, rclone, tmp_path, monkeypatch, canary, new_process):
    dead = (f"AK{canary}", canary)
    ks = keystone_factory(seed=(dead,))
    _keystone_profile(tmp_path, monkeypatch, ks, rclone.url)
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="frank@egi.eu"))
    s3.resolve("cloud")
    new_process()
    settings = s3.resolve("cloud")
    assert settings.access_key_id and settings.access_key_id != dead[0]
    assert _keystone_calls(ks)["create ec2"] == 1
    [cache] = _cache_files()
    assert json.loads(cache.read_text())["access"] == settings.access_key_id


def test_valid_cached_keys_cost_no_keystone_call_and_one_s3_check_per_process(
        keystone_factory, make_jwt, rclone, tmp_path, monkeypatch, new_process):
    ks = keystone_factory(seed=(_rclone_pair(rclone),))
    with FaultProxy(rclone.port) as px:
        _keystone_profile(tmp_path, monkeypatch, ks, px.url)
        monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="grace@egi.eu"))
        s3.resolve("cloud")
        assert px.count() == 0  # keys fresh from Keystone are not checked
        calls = _keystone_calls(ks)
        new_process()
        for _ in range(3):
            assert s3.resolve("cloud").access_key_id == rclone.extra["access_key"]
        assert px.count() == 1 and px.count("GET") == 1
        assert _keystone_calls(ks) == calls


def test_cached_keys_are_kept_when_s3_cannot_be_reached(keystone_factory, make_jwt, tmp_path, monkeypatch,
                                                        new_process, caplog):
    ks = keystone_factory(seed=(("AKcached0001", "cached-secret-0001"),))
    _keystone_profile(tmp_path, monkeypatch, ks, "http://127.0.0.1:9")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="heidi@egi.eu"))
    s3.resolve("cloud")
    calls = _keystone_calls(ks)
    new_process()
    _watch_logs(caplog)
    for _ in range(2):
        settings = s3.resolve("cloud")
        assert (settings.access_key_id, settings.secret_access_key) == ("AKcached0001", "cached-secret-0001")
    assert _keystone_calls(ks) == calls and len(_cache_files()) == 1
    assert sum("cannot check the cached EC2 credential" in r.getMessage() for r in caplog.records) == 1


def test_refused_keys_never_show_in_logs_or_errors(keystone_factory, make_jwt, rclone, tmp_path, monkeypatch,
                                                   canary, new_process, caplog):
    """Keystone also refuses the token now: the error names the token problem, not the dead keys."""
    dead = (f"AK{canary}", canary)
    ks = keystone_factory(seed=(dead,))
    _keystone_profile(tmp_path, monkeypatch, ks, rclone.url)
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="ivan@egi.eu"))
    s3.resolve("cloud")
    new_process()
    import jwt

    stale = jwt.encode({"sub": "ivan@egi.eu", "exp": int(time.time()) + 600}, "not-the-issuer-key-0123456789abcdef",
                       algorithm="HS256")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", stale)
    _watch_logs(caplog)
    with pytest.raises(AuthError) as info:
        s3.resolve("cloud")
    shown = "".join(traceback.format_exception(info.value))
    assert "refused the OIDC token" in str(info.value) and canary not in shown
    assert canary not in caplog.text and "refused the cached EC2 credential" in caplog.text
    assert _cache_files() == []


def test_forget_cached_drops_only_that_subjects_file(keystone_factory, make_jwt, tmp_path, monkeypatch):
    ks = keystone_factory(seed=(("AKshared0001", "shared-secret-0001"),))
    _keystone_profile(tmp_path, monkeypatch, ks, "http://127.0.0.1:9")
    tokens_by_user = {sub: make_jwt(sub=sub) for sub in ("judy@egi.eu", "ken@egi.eu")}
    for token in tokens_by_user.values():
        monkeypatch.setenv("OIDC_ACCESS_TOKEN", token)
        s3.resolve("cloud")
    both = _cache_files()
    assert len(both) == 2
    prof = config.get().s3["cloud"]
    assert s3.forget_cached(prof, token_provider=StaticToken(tokens_by_user["judy@egi.eu"])) is True
    assert s3.forget_cached(prof, token_provider=StaticToken(tokens_by_user["judy@egi.eu"])) is False
    [left] = _cache_files()
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", tokens_by_user["ken@egi.eu"])
    before = left.read_text()
    s3.resolve("cloud")
    assert _cache_files() == [left] and left.read_text() == before  # ken's cache is still the one used
