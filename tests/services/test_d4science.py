"""The D4Science hub's environment, the VRE token's two shapes, and the UMA grant for CCP."""

from __future__ import annotations

import pytest

from nbplugins import secrets
from nbplugins.errors import AuthError, ConfigError, TokenError, TokenExpiredError
from nbplugins.services import d4science
from nbplugins.services.d4science import EXPIRED, AccessToken, HubToken
from nbplugins.services.uma import UmaToken


def test_the_hub_environment_gives_endpoint_context_and_token(monkeypatch):
    monkeypatch.setenv("DATAMINER_URL", "https://dataminer.d4science.org/wps/WebProcessingService")
    monkeypatch.setenv("GCUBE_CONTEXT", "/d4science.research-infrastructures.eu/D4OS/Lab")
    monkeypatch.setenv("GCUBE_TOKEN", "0b7c1d2e-aaaa-bbbb-cccc-1234567890ab-98765")
    hub = d4science.hub()
    assert hub.require_dataminer() == "https://dataminer.d4science.org/wps/WebProcessingService"
    assert hub.require_context() == "/d4science.research-infrastructures.eu/D4OS/Lab"
    assert hub.token_endpoint.startswith("https://accounts.d4science.org/")
    monkeypatch.setenv("D4SCIENCE_TOKEN", "ffffffff-aaaa-bbbb-cccc-1234567890ab-11111")  # the newer name wins
    assert HubToken().get().value == "ffffffff-aaaa-bbbb-cccc-1234567890ab-11111"


def test_a_jwt_goes_as_bearer_and_a_gcube_token_as_its_header(make_jwt):
    jwt_token = HubToken(make_jwt()).get()
    legacy = HubToken("0b7c1d2e-aaaa-bbbb-cccc-1234567890ab-98765").get()
    assert d4science.headers_for(jwt_token) == {"Authorization": f"Bearer {jwt_token.value}"}
    assert d4science.headers_for(legacy) == {"gcube-token": legacy.value}
    assert secrets.redact(f"x {jwt_token.value} {legacy.value}") == "x *** ***"  # registered at once


def test_an_expired_hub_token_says_what_to_do(make_jwt):
    with pytest.raises(TokenExpiredError) as info:
        HubToken(make_jwt(lifetime=-5)).get()
    assert str(info.value) == EXPIRED == "the D4Science token has expired: reopen the VRE, or configure a refresh"


def test_missing_settings_are_named():
    with pytest.raises(TokenError, match="set D4SCIENCE_TOKEN"):
        HubToken().get()
    with pytest.raises(ConfigError, match="set DATAMINER_URL"):
        d4science.hub().require_dataminer()
    with pytest.raises(ConfigError, match="set D4SCIENCE_CONTEXT"):
        d4science.hub().require_context()
    with pytest.raises(ConfigError, match="not an http"):
        d4science.hub().require_dataminer("file:///etc/passwd")


def test_the_uma_access_token_falls_back_to_the_token_layer(make_jwt, monkeypatch):
    oidc = make_jwt(sub="bob@egi.eu")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", oidc)
    assert AccessToken().get().value == oidc
    hub = make_jwt(sub="alice@d4science.org")
    monkeypatch.setenv("D4SCIENCE_TOKEN", hub)
    assert AccessToken().get().value == hub  # the VRE token first, where there is one
    monkeypatch.setenv("D4SCIENCE_TOKEN", make_jwt(lifetime=-5))
    assert AccessToken().get().value == oidc  # an expired VRE token gives way
    monkeypatch.delenv("OIDC_ACCESS_TOKEN")
    with pytest.raises(TokenExpiredError, match="reopen the VRE"):
        AccessToken().get()


def test_the_uma_grant_names_the_context_and_is_cached_until_forced(processes_server):
    uma = UmaToken(processes_server.token_endpoint, processes_server.context, HubToken(processes_server.user_token))
    first = uma.get()
    assert uma.get() is first and processes_server.count("uma") == 1
    assert first.expires_at is not None and not first.expired(60)
    assert secrets.redact(first.value) == "***"
    second = uma.get(force_refresh=True)
    assert second.value != first.value and processes_server.count("uma") == 2


def test_a_uma_token_near_expiry_is_renewed_before_use(processes_server):
    processes_server.uma_lifetime(20)  # inside the renewal margin
    uma = UmaToken(processes_server.token_endpoint, processes_server.context, HubToken(processes_server.user_token))
    uma.get()
    uma.get()
    assert processes_server.count("uma") == 2


def test_a_refused_uma_grant_says_why(processes_server, make_jwt):
    wrong = UmaToken(processes_server.token_endpoint, "/d4science/Elsewhere", HubToken(processes_server.user_token))
    with pytest.raises(AuthError, match=r"UMA grant for /d4science/Elsewhere was refused \(HTTP 403\).*context name"):
        wrong.get()
    stranger = UmaToken(processes_server.token_endpoint, processes_server.context, HubToken("not-a-user-token-at-all"))
    with pytest.raises(AuthError, match=r"UMA grant .* was refused") as info:
        stranger.get()
    assert "not-a-user-token-at-all" not in str(info.value)
