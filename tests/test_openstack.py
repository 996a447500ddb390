"""OpenStack through the Check-in token: sessions for novaclient and openstacksdk, sites, projects,
servers, a rotated token, an expired Keystone token, refused tokens and projects, bad input.

Against the Keystone test server (federated OIDC log-in, scoping, a service catalog and a Nova
API in the same process), itself proven first with plain keystoneauth1, novaclient and openstacksdk.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity.v3 import OidcAccessToken

from nbplugins import openstack, secrets
from nbplugins.errors import AuthError, ConfigError, NbpluginsError, ValidationError
from tests.servers import harness

ROOT = Path(__file__).resolve().parent.parent
JWT_KEY = "test-signing-key-not-a-secret-0123456789"  # the make_jwt fixture's key
PROJECT = "b3c2f1e0d9a84c7b9e6f5a4d3c2b1a00"
EXTRA = "0123456789abcdef0123456789abcdef"
OUTSIDER = "ffffffffffffffffffffffffffffffff"
SERVER_NAMES = {"pangeo-worker-1", "pangeo-worker-2", "jupyter-gateway"}


@pytest.fixture(scope="module")
def keystone(tmp_path_factory) -> Iterator[harness.ServerProcess]:
    """The Keystone test server: the user is in PROJECT (three servers) and EXTRA (none)."""
    argv = [sys.executable, "-m", "tests.servers.keystone", "--port", "{port}", "--jwt-key", JWT_KEY,
            "--project", PROJECT, "--extra-project", EXTRA]
    port = harness.free_port()
    server = harness.start("keystone", argv, port=port, cwd=str(ROOT),
                           ready=harness.http_ready(f"http://127.0.0.1:{port}/v3"),
                           log_dir=tmp_path_factory.mktemp("keystone"))
    yield server
    server.stop()


def stats(ks: harness.ServerProcess) -> dict:
    return requests.get(f"{ks.url}/_test/stats", timeout=5).json()


def expire_keystone_tokens(ks: harness.ServerProcess) -> None:
    requests.post(f"{ks.url}/_test/expire", timeout=5).raise_for_status()


def token_file(tmp_path: Path, monkeypatch, value: str) -> Path:
    path = tmp_path / "access_token"
    path.write_text(value)
    path.chmod(0o600)
    monkeypatch.setenv("NBPLUGINS_TOKEN_FILE", str(path))
    return path


def site_config(tmp_path: Path, monkeypatch, ks: harness.ServerProcess, **site: str) -> None:
    fields = {"auth_url": f"{ks.url}/v3", "project_id": PROJECT, "region": "RegionOne", **site}
    body = "\n".join(f'{k} = "{v}"' for k, v in fields.items())
    (tmp_path / "config.toml").write_text(f'[openstack]\ndefault = "cesnet"\n\n[openstack.sites.cesnet]\n{body}\n'
                                          f'\n[openstack.sites.other]\nauth_url = "https://keystone.invalid:5000"\n')
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(tmp_path / "config.toml"))


# ----------------------------------------------------------------------------- the server is faithful


def test_keystone_server_serves_plain_keystoneauth1_novaclient_and_openstacksdk(keystone, make_jwt):
    """No nbplugins code: the clients' own federated log-in, catalog lookup, discovery and listing."""
    from novaclient import client as nova_client
    from openstack import connection

    auth = OidcAccessToken(auth_url=f"{keystone.url}/v3", identity_provider="egi.eu", protocol="openid",
                           access_token=make_jwt(sub="plain@egi.eu"), project_id=PROJECT)
    sess = ks_session.Session(auth=auth)
    nova = nova_client.Client("2.1", session=sess)
    listed = nova.servers.list()
    assert {s.name for s in listed} == SERVER_NAMES
    worker = next(s for s in listed if s.name == "pangeo-worker-1")
    assert worker.status == "ACTIVE" and nova.flavors.get(worker.flavor["id"]).name == "m1.medium"
    assert worker.addresses["public"][0]["addr"] == "147.251.21.10"
    conn = connection.Connection(session=sess, region_name="RegionOne")
    sdk = {s.name: s for s in conn.compute.servers()}
    assert set(sdk) == SERVER_NAMES and sdk["pangeo-worker-2"].status == "SHUTOFF"
    assert sdk["pangeo-worker-2"].flavor.original_name == "m1.large"  # microversion >= 2.47 negotiated
    assert {f.name for f in conn.compute.flavors()} == {"m1.small", "m1.medium", "m1.large"}
    unscoped = ks_session.Session(auth=OidcAccessToken(
        auth_url=f"{keystone.url}/v3", identity_provider="egi.eu", protocol="openid",
        access_token=make_jwt(sub="plain@egi.eu")))
    projects = unscoped.get(f"{keystone.url}/v3/auth/projects", authenticated=True).json()["projects"]
    assert {p["id"] for p in projects} == {PROJECT, EXTRA}


# ----------------------------------------------------------------------------- sessions, sites, listings


def test_session_works_unchanged_with_novaclient_and_openstacksdk(keystone, make_jwt, monkeypatch):
    from novaclient import client as nova_client
    from openstack import connection

    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="sdk@egi.eu"))
    sess = openstack.session(keystone.url, PROJECT)
    assert isinstance(sess, ks_session.Session) and sess.get_project_id() == PROJECT
    assert isinstance(sess.auth, OidcAccessToken) and sess.auth.identity_provider == "egi.eu"
    assert {s.name for s in nova_client.Client("2.1", session=sess).servers.list()} == SERVER_NAMES
    assert {s.name for s in connection.Connection(session=sess).compute.servers()} == SERVER_NAMES
    assert {s.name for s in openstack.servers(sess=sess)} == SERVER_NAMES  # the session knows its site
    assert stats(keystone)["federated"]["sdk@egi.eu"] == 1  # one log-in served the three clients


def test_servers_lists_name_status_flavor_and_addresses(keystone, make_jwt, monkeypatch):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="lister@egi.eu"))
    found = {s.name: s for s in openstack.servers(f"{keystone.url}/v3/", PROJECT)}
    assert set(found) == SERVER_NAMES
    assert (found["pangeo-worker-2"].status, found["pangeo-worker-2"].flavor) == ("SHUTOFF", "m1.large")
    assert found["jupyter-gateway"].addresses == "ipv6=2001:718:801::5; private=192.168.1.5, 147.251.21.99"
    assert openstack.servers(keystone.url, EXTRA) == []  # the other project has none


def test_projects_lists_what_the_token_can_scope_to(keystone, make_jwt, monkeypatch):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="projects@egi.eu"))
    found = openstack.projects(keystone.url)
    assert [(p.id, p.name) for p in found] == [(EXTRA, "vo.extra1"), (PROJECT, "vo.test")]
    assert stats(keystone)["counts"]["GET /v3/auth/projects"] >= 1


def test_a_site_by_name_and_the_default_site_come_from_the_config(keystone, make_jwt, monkeypatch, tmp_path):
    site_config(tmp_path, monkeypatch, keystone, identity_provider="egi.eu", protocol="openid")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="site@egi.eu"))
    target = openstack.site("cesnet")
    assert (target.name, target.auth_url, target.project_id, target.region) == \
        ("cesnet", f"{keystone.url}/v3", PROJECT, "RegionOne")
    assert openstack.site() == target  # [openstack] default
    assert openstack.site("cesnet", EXTRA.upper()).project_id == EXTRA  # a project given wins
    assert {s.name for s in openstack.servers("cesnet")} == SERVER_NAMES
    assert openstack.session().get_project_id() == PROJECT


def test_identity_provider_and_protocol_are_configurable(keystone, make_jwt, monkeypatch, tmp_path):
    site_config(tmp_path, monkeypatch, keystone, identity_provider="other-idp")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="idp@egi.eu"))
    before = stats(keystone)["counts"].get("federation auth", 0)
    with pytest.raises(ConfigError) as info:
        openstack.session("cesnet")
    assert "no identity provider 'other-idp' with protocol 'openid'" in str(info.value)
    assert stats(keystone)["counts"]["federation auth"] > before  # it asked at the configured IdP's URL
    assert openstack.session("cesnet", identity_provider="egi.eu").get_project_id() == PROJECT


# ----------------------------------------------------------------------------- re-authentication


def test_a_rotated_token_file_is_used_at_the_next_login(keystone, make_jwt, monkeypatch, tmp_path, canary):
    path = token_file(tmp_path, monkeypatch, make_jwt(sub="rotor-1@egi.eu"))
    sess = openstack.session(keystone.url, PROJECT)
    assert len(openstack.servers(keystone.url, PROJECT, sess=sess)) == 3
    assert stats(keystone)["federated"]["rotor-1@egi.eu"] == 1
    rotated = make_jwt(sub="rotor-2@egi.eu", jti=canary)
    path.write_text(rotated)  # the hub rewrote the token file
    assert len(openstack.servers(keystone.url, PROJECT, sess=sess)) == 3
    federated = stats(keystone)["federated"]
    assert federated["rotor-1@egi.eu"] == 1 and federated["rotor-2@egi.eu"] == 1
    assert len(openstack.servers(keystone.url, PROJECT, sess=sess)) == 3
    assert stats(keystone)["federated"]["rotor-2@egi.eu"] == 1  # same token: no new log-in


def test_an_expired_keystone_token_is_replaced_with_the_current_oidc_token(keystone, make_jwt, monkeypatch,
                                                                           tmp_path):
    from novaclient import client as nova_client

    path = token_file(tmp_path, monkeypatch, make_jwt(sub="expiry-1@egi.eu"))
    sess = openstack.session(keystone.url, PROJECT)
    nova = nova_client.Client("2.1", session=sess)
    assert len(nova.servers.list()) == 3
    # the file rotates and Keystone's tokens expire: the 401 makes keystoneauth1 log in again, with the new token
    path.write_text(make_jwt(sub="expiry-2@egi.eu"))
    expire_keystone_tokens(keystone)
    assert len(nova.servers.list()) == 3
    federated = stats(keystone)["federated"]
    assert federated["expiry-1@egi.eu"] == 1 and federated["expiry-2@egi.eu"] == 1


def test_a_refused_oidc_token_is_refreshed_once_then_explained(keystone, monkeypatch, canary):
    import time

    import jwt

    bad = jwt.encode({"sub": "mallory@egi.eu", "exp": int(time.time()) + 600, "jti": canary,
                      "iss": "https://aai.egi.eu/auth/realms/egi", "aud": "someone-else"},
                     "not-the-issuer-key-0123456789abcdef", algorithm="HS256")
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", bad)
    before = stats(keystone)["counts"].get("federation auth", 0)
    with pytest.raises(AuthError) as info:
        openstack.session(keystone.url, PROJECT)
    message = str(info.value)
    assert "refused the OIDC token" in message and "'egi.eu'" in message and "'openid'" in message
    assert "\n" not in message and bad not in message and canary not in message
    assert stats(keystone)["counts"]["federation auth"] - before == 2  # one forced refresh, then the diagnosis


def test_a_project_the_user_cannot_scope_to_is_named_in_one_line(keystone, make_jwt, monkeypatch):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="outsider@egi.eu"))
    with pytest.raises(AuthError) as info:
        openstack.session(keystone.url, OUTSIDER)
    message = str(info.value)
    assert f"cannot scope to project {OUTSIDER}" in message and "\n" not in message
    assert "nbplugins openstack projects" in message


# ----------------------------------------------------------------------------- bad input


def test_an_unknown_site_lists_the_known_ones(keystone, monkeypatch, tmp_path):
    site_config(tmp_path, monkeypatch, keystone)
    with pytest.raises(ConfigError) as info:
        openstack.session("nowhere")
    assert "unknown OpenStack site 'nowhere'" in str(info.value) and "cesnet, other" in str(info.value)


@pytest.mark.parametrize("project", ["b3c2f1e0", "not-a-project-id-not-a-project-i", PROJECT + "0", "vo.test"])
def test_a_project_id_that_is_not_32_hex_characters_is_refused(keystone, project, make_jwt, monkeypatch):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt())
    before = stats(keystone)["counts"]
    with pytest.raises(ValidationError) as info:
        openstack.session(keystone.url, project)
    assert "32 hexadecimal characters" in str(info.value) and repr(project) in str(info.value)
    after = stats(keystone)["counts"]
    assert after.get("federation auth") == before.get("federation auth")  # refused before any request


@pytest.mark.parametrize("where", ["/compute", "/nothing/here", "/_test/stats"])
def test_an_auth_url_that_is_not_keystone_v3_says_so(keystone, where, make_jwt, monkeypatch):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt())
    with pytest.raises(ValidationError) as info:
        openstack.session(keystone.url + where, PROJECT)
    assert "is not a Keystone v3 endpoint" in str(info.value) and "version discovery" in str(info.value)


@pytest.mark.parametrize("url", ["keystone.example.org:5000", "ftp://keystone.example.org/v3",
                                 "https://user:pw@keystone.example.org/v3"])
def test_a_malformed_auth_url_is_refused(url):
    with pytest.raises(NbpluginsError) as info:
        openstack.session(url, PROJECT)
    assert "pw" not in str(info.value) and ("https://" in str(info.value) or "http(s)" in str(info.value))


def test_no_site_at_all_says_how_to_name_one(monkeypatch):
    with pytest.raises(ConfigError) as info:
        openstack.session()
    assert "no OpenStack site given" in str(info.value)


def test_a_site_without_a_project_asks_for_one(keystone, monkeypatch, tmp_path):
    with pytest.raises(ConfigError) as info:
        openstack.session(keystone.url)
    assert "no project to scope to" in str(info.value)


# ----------------------------------------------------------------------------- secrets


def test_the_token_is_in_no_log_record_error_or_listing(keystone, make_jwt, monkeypatch, canary, caplog):
    token = make_jwt(sub="quiet@egi.eu", jti=canary)
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    sess = openstack.session(keystone.url, PROJECT)
    shown = repr(openstack.servers(keystone.url, PROJECT, sess=sess)) + repr(openstack.projects(keystone.url))
    errors = []
    for call in (lambda: openstack.session(keystone.url, OUTSIDER), lambda: openstack.session(keystone.url, "x")):
        with pytest.raises(NbpluginsError) as info:
            call()
        errors.append("".join(traceback.format_exception(info.value)))
    everything = caplog.text + shown + "".join(errors)
    assert "REQ: curl" in caplog.text  # keystoneauth1 did log its requests
    assert token not in everything and canary not in everything
    assert secrets.registered_in(everything) == 0


# ----------------------------------------------------------------------------- the S3 exchange shares it


def test_the_s3_keystone_exchange_logs_in_through_the_same_plugin_and_may_name_a_site(
        keystone, make_jwt, monkeypatch, tmp_path):
    """An S3 profile naming ``site`` uses the site's Keystone and project."""
    from nbplugins.config import S3Profile
    from nbplugins.storage import s3

    SiteProfile = S3Profile  # noqa: N806 - the name says what the test builds
    site_config(tmp_path, monkeypatch, keystone)
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="s3-site@egi.eu"))
    target = s3.keystone_site(SiteProfile(credentials="keystone", site="cesnet"))
    assert (target.auth_url, target.project_id) == (f"{keystone.url}/v3", PROJECT)
    seen: list[object] = []
    real = openstack.auth_plugin
    monkeypatch.setattr(openstack, "auth_plugin", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    cred = s3.ec2_credentials(SiteProfile(credentials="keystone", site="cesnet"))
    assert cred["project_id"] == PROJECT and secrets.redact(cred["secret"]) == secrets.MARKER
    assert len(seen) == 1 and isinstance(seen[0], openstack.CheckinAuth)
    assert stats(keystone)["federated"]["s3-site@egi.eu"] == 1
    with pytest.raises(ValidationError):
        s3.keystone_site(S3Profile(credentials="keystone", keystone_url=f"{keystone.url}/v3", project_id="tenant"))
