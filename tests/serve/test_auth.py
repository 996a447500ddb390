"""Auth backends against real servers (the fake openBIS, the OIDC provider, a token file), the
lookup cache, and the OIDC backend end to end through the service."""

from __future__ import annotations

import time

import pytest
import requests

from nbplugins.errors import ConfigError
from nbplugins.serve import auth
from nbplugins.serve.base import Unauthorized, Upstream
from tests.serve.conftest import make_users, notebook, remove_users, start_service
from tests.servers import harness


@pytest.fixture
def trusted(openbis_server, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", openbis_server.extra["ca"])
    return openbis_server


def new_token(server, user: str, kind: str = "session") -> str:
    return requests.post(f"{server.url}/_test/{kind}", json={"user": user}, verify=server.extra["ca"],
                         timeout=10).json()["token"]


def test_openbis_names_the_user_of_a_session_token_and_of_a_personal_access_token(trusted):
    backend = auth.create("openbis", url=trusted.url)
    assert backend.user(new_token(trusted, "anne-marie")) == "anne-marie"
    assert backend.user(new_token(trusted, "anne-marie", "pat")) == "anne-marie"


def test_openbis_refusal_is_401_without_the_token_or_openbis_message(trusted, canary):
    with pytest.raises(Unauthorized) as caught:
        auth.create("openbis", url=trusted.url).user(f"alice-{canary}")
    assert canary not in str(caught.value) and "not logged in" not in str(caught.value)


def test_openbis_behind_an_untrusted_certificate_is_502(openbis_server, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    with pytest.raises(Upstream, match="(?i)certificate"):
        auth.create("openbis", url=openbis_server.url, timeout=2).user(new_token(openbis_server, "alice"))


def test_an_unreachable_openbis_is_502_within_the_timeout():
    url = f"https://127.0.0.1:{harness.free_port()}"
    with pytest.raises(Upstream, match="openBIS"):
        auth.create("openbis", url=url, timeout=1).user("alice-123")


def test_oidc_names_the_user_from_the_configured_claim(oidc_provider, oidc_login):
    sub, grant = oidc_login("carol@egi.eu")
    backend = auth.create("oidc", issuer=oidc_provider.url, claim="sub")
    assert backend.user(grant["access_token"]) == "carol@egi.eu"
    with pytest.raises(Unauthorized, match="no 'nickname' claim"):
        auth.create("oidc", issuer=oidc_provider.url, claim="nickname").user(grant["access_token"])


def test_oidc_refuses_an_unknown_token(oidc_provider, canary):
    with pytest.raises(Unauthorized) as caught:
        auth.create("oidc", issuer=oidc_provider.url).user(canary)
    assert canary not in str(caught.value)


def test_a_token_file_maps_tokens_to_users_and_is_reread_when_changed(tmp_path, canary):
    path = tmp_path / "tokens"
    path.write_text(f"# token user\n{canary}-a alice\n\n{canary}-b bob\n")
    backend = auth.create("token-file", path=str(path))
    assert (backend.user(f"{canary}-a"), backend.user(f"{canary}-b")) == ("alice", "bob")
    with pytest.raises(Unauthorized) as caught:
        backend.user(f"{canary}-c")
    assert canary not in str(caught.value)
    path.write_text(f"{canary}-c carol\n")
    assert backend.user(f"{canary}-c") == "carol"
    with pytest.raises(Unauthorized):
        backend.user(f"{canary}-a")


def test_a_malformed_or_missing_token_file_is_a_config_error(tmp_path):
    (tmp_path / "bad").write_text("just-one-field\n")
    with pytest.raises(ConfigError, match="line 1"):
        auth.create("token-file", path=str(tmp_path / "bad"))
    with pytest.raises(ConfigError, match="does not exist"):
        auth.create("token-file", path=str(tmp_path / "missing"))


def test_an_unknown_backend_names_the_known_ones():
    with pytest.raises(ConfigError, match="openbis, token-file"):
        auth.create("ldap")


class Counting(auth.AuthBackend):
    def __init__(self) -> None:
        self.calls = 0

    def user(self, token: str) -> str:
        self.calls += 1
        if token.startswith("bad"):
            raise Unauthorized("no")
        return f"user-of-{token[-1]}"


def test_the_cache_keeps_successes_for_the_ttl_keyed_by_a_hash_never_the_token(canary):
    backend = Counting()
    cache = auth.CachedAuth(backend, ttl=0.2)
    assert cache.cached(f"{canary}1") is None
    assert cache.lookup(f"{canary}1") == "user-of-1"
    assert cache.cached(f"{canary}1") == "user-of-1"
    assert all(isinstance(key, bytes) and len(key) == 32 for key in cache._entries)
    assert canary not in repr(cache._entries)
    time.sleep(0.3)
    assert cache.cached(f"{canary}1") is None


def test_the_cache_never_keeps_a_refusal_and_stays_bounded():
    backend = Counting()
    cache = auth.CachedAuth(backend, ttl=60, size=3)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            cache.lookup("bad-token")
    assert cache.cached("bad-token") is None and backend.calls == 2
    for i in range(10):
        cache.lookup(f"token-{i}")
    assert len(cache._entries) == 3 and cache.cached("token-9") == "user-of-9" and cache.cached("token-0") is None


def test_the_service_with_oidc_writes_into_the_home_named_by_the_claim(oidc_provider, oidc_login, tmp_path):
    users = make_users(tmp_path / "homes", 1)
    try:
        _, grant = oidc_login(users[0])
        service = start_service("--homes", str(tmp_path / "homes" / "{user}"), "--oidc-issuer", oidc_provider.url,
                                "--oidc-claim", "sub", log_dir=tmp_path)
        try:
            answer = requests.post(service.url, params={"token": grant["access_token"], "folder": "o",
                                                        "filename": "x.ipynb"}, data=notebook(), timeout=30)
            assert answer.status_code == 200, answer.text
            assert (tmp_path / "homes" / users[0] / "o" / "x.ipynb").is_file()
            refused = requests.post(service.url, params={"token": "nope-" + grant["access_token"][:10],
                                                         "folder": "o", "filename": "x.ipynb"}, timeout=30)
            assert refused.status_code == 401
            assert grant["access_token"] not in service.log_path.read_text()
        finally:
            service.stop()
    finally:
        remove_users(tmp_path / "homes", users)
