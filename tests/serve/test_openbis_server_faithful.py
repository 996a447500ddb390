"""The fake openBIS answers pybis (openBIS's own Python client) as openBIS does: login,
isSessionActive (``is_token_valid``), getSessionInformation (``get_session_info``), personal
access tokens and logout."""

from __future__ import annotations

import pytest
import requests
from pybis import Openbis


@pytest.fixture
def client(openbis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # pybis keeps tokens under ~/.pybis
    return Openbis(openbis_server.url, verify_certificates=False)


def test_login_gives_a_session_token_pybis_accepts(client):
    token = client.login("admin", "admin-password")
    assert token.startswith("admin-") and client.is_token_valid()
    info = client.get_session_info()
    assert info.userName == "admin" and info.sessionToken == token and info.personalAccessTokenSession is False


def test_a_wrong_password_is_refused(client):
    with pytest.raises(ValueError, match="login to openBIS failed"):
        client.login("admin", "wrong")


def test_a_personal_access_token_is_valid_and_names_its_owner(client, openbis_server):
    pat = requests.post(f"{openbis_server.url}/_test/pat", json={"user": "anne-marie"},
                        verify=openbis_server.extra["ca"], timeout=10).json()["token"]
    client.set_token(pat)
    assert client.token == pat and client.is_token_valid()
    info = client.get_session_info()
    assert info.userName == "anne-marie" and info.personalAccessTokenSession is True


def test_logout_ends_the_session(client):
    token = client.login("admin", "admin-password")
    client.logout()
    assert client.is_token_valid(token) is False
    assert client.get_session_info(token) is None
    with pytest.raises(ValueError, match="no longer valid"):
        client.set_token(token)
