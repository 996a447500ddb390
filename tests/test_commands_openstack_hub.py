"""``nbplugins openstack servers|projects`` and ``nbplugins hub api|servers`` through the real command:
tables and JSON on stdout; every bad input one line on stderr, exit 1, no traceback, no token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import test_openstack
from tests.hub import test_api
from tests.hub.test_api import service_token
from tests.test_openstack import EXTRA, OUTSIDER, PROJECT, SERVER_NAMES

hub, not_a_hub, keystone = test_api.hub, test_api.not_a_hub, test_openstack.keystone  # the same fixtures

pytestmark = pytest.mark.timeout(300)


def nbplugins(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbplugins", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str], *secrets_: str) -> str:
    """The failure is one ``nbplugins: error:`` line, exit 1, no traceback, no secret anywhere."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbplugins: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for secret in secrets_:
        assert secret not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def token_env(make_jwt, canary) -> tuple[dict[str, str], str]:
    token = make_jwt(sub="cli@egi.eu", jti=canary)
    return {"OIDC_ACCESS_TOKEN": token}, token


def test_openstack_servers_prints_a_table(keystone, token_env, tmp_path, canary):
    env, token = token_env
    result = nbplugins("openstack", "servers", "--auth-url", f"{keystone.url}/v3", "--project-id", PROJECT,
                       env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "STATUS", "FLAVOR", "ADDRESSES"]
    assert {row.split()[0] for row in rows} == SERVER_NAMES
    assert any(r.split()[:3] == ["pangeo-worker-2", "SHUTOFF", "m1.large"] for r in rows)
    assert token not in result.stdout + result.stderr and canary not in result.stdout + result.stderr


def test_openstack_servers_and_projects_by_site_name(keystone, token_env, tmp_path):
    env, _ = token_env
    config = tmp_path / "config.toml"
    config.write_text(f'[openstack.sites.cesnet]\nauth_url = "{keystone.url}/v3"\nproject_id = "{PROJECT}"\n')
    env = {**env, "NBPLUGINS_CONFIG": str(config)}
    servers = nbplugins("openstack", "servers", "--site", "cesnet", env=env, cwd=tmp_path)
    assert servers.returncode == 0 and "jupyter-gateway" in servers.stdout, servers.stderr
    projects = nbplugins("openstack", "projects", "--site", "cesnet", env=env, cwd=tmp_path)
    assert projects.returncode == 0, projects.stderr
    assert [line.split()[:2] for line in projects.stdout.splitlines()[1:]] == [[EXTRA, "vo.extra1"],
                                                                              [PROJECT, "vo.test"]]


@pytest.mark.parametrize(("args", "expected"), [
    (["--site", "nowhere"], "unknown OpenStack site 'nowhere' (known: cesnet)"),
    (["--auth-url", "{ks}/v3", "--project-id", "12345"], "'12345' is not a Keystone project id"),
    (["--auth-url", "{ks}/compute", "--project-id", PROJECT], "is not a Keystone v3 endpoint"),
    (["--auth-url", "{ks}/v3", "--project-id", OUTSIDER], f"cannot scope to project {OUTSIDER}"),
    (["--site", "cesnet", "--auth-url", "{ks}/v3"], "not both"),
])
def test_openstack_bad_input_is_one_line(keystone, token_env, tmp_path, args, expected, canary):
    env, token = token_env
    config = tmp_path / "config.toml"
    config.write_text(f'[openstack.sites.cesnet]\nauth_url = "{keystone.url}/v3"\n')
    env = {**env, "NBPLUGINS_CONFIG": str(config)}
    result = nbplugins("openstack", "servers", *[a.format(ks=keystone.url) for a in args], env=env, cwd=tmp_path)
    assert expected in one_line_error(result, token, canary)


def test_openstack_refused_token_is_one_line_with_the_diagnosis(keystone, tmp_path, canary):
    import time

    import jwt

    bad = jwt.encode({"sub": "x@egi.eu", "exp": int(time.time()) + 600, "jti": canary}, "wrong-key-0123456789abcdef-0123456789",
                     algorithm="HS256")
    result = nbplugins("openstack", "projects", "--auth-url", keystone.url, env={"OIDC_ACCESS_TOKEN": bad},
                       cwd=tmp_path)
    assert "refused the OIDC token" in one_line_error(result, bad, canary)


def test_hub_api_prints_the_json_answer(hub, tmp_path):
    env = {"OIDC_ACCESS_TOKEN": service_token(hub)}
    made = nbplugins("hub", "api", "POST", "/users/cliuser", "--hub", hub.url, env=env, cwd=tmp_path)
    assert made.returncode == 0 and json.loads(made.stdout)["name"] == "cliuser", made.stderr
    listed = nbplugins("hub", "api", "GET", "/users", "--hub", hub.url, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "cliuser" in [u["name"] for u in json.loads(listed.stdout)]
    token = nbplugins("hub", "api", "POST", "/users/cliuser/tokens", "--hub", hub.url, "--data",
                      '{"note": "cli"}', env=env, cwd=tmp_path)
    assert token.returncode == 0 and json.loads(token.stdout)["token"] == "***"  # a new token is never printed
    assert service_token(hub) not in listed.stdout + listed.stderr + made.stdout + token.stdout


def test_hub_servers_prints_a_table(hub, tmp_path):
    env = {"OIDC_ACCESS_TOKEN": service_token(hub)}
    nbplugins("hub", "api", "POST", "/users/tabled", "--hub", hub.url, env=env, cwd=tmp_path)
    empty = nbplugins("hub", "servers", "--hub", hub.url, "--user", "tabled", env=env, cwd=tmp_path)
    assert empty.returncode == 0 and empty.stdout.strip() == "no servers running", empty.stderr
    started = nbplugins("hub", "api", "POST", "/users/tabled/server", "--hub", hub.url, env=env, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    table = nbplugins("hub", "servers", "--hub", hub.url, "--all", env=env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["USER", "SERVER", "STATE"]
    assert any(r.split()[:2] == ["tabled", "(default)"] for r in rows)
    nbplugins("hub", "api", "DELETE", "/users/tabled/server", "--hub", hub.url, env=env, cwd=tmp_path)


@pytest.mark.parametrize(("args", "expected"), [
    (["api", "GET", "/users", "--hub", "nowhere"], "hub 'nowhere': not a known hub name"),
    (["api", "GET", "/users", "--hub", "{not_a_hub}"], "is not a JupyterHub API"),
    (["api", "POST", "/users/x", "--hub", "{hub}", "--data", "{{not json"], "--data is not JSON"),
    (["api", "FETCH", "/users", "--hub", "{hub}"], "HTTP method 'FETCH'"),
    (["servers", "--hub", "{hub}"], "the token belongs to the service 'nbplugins-tests', not a user"),
])
def test_hub_bad_input_is_one_line(hub, not_a_hub, tmp_path, args, expected):
    env = {"OIDC_ACCESS_TOKEN": service_token(hub)}
    result = nbplugins("hub", *[a.format(hub=hub.url, not_a_hub=not_a_hub) for a in args], env=env, cwd=tmp_path)
    assert expected in one_line_error(result, service_token(hub))


def test_hub_refusal_is_one_line_with_the_diagnosis(hub, tmp_path, canary):
    result = nbplugins("hub", "api", "GET", "/users", "--hub", hub.url, env={"OIDC_ACCESS_TOKEN": f"bad{canary}"},
                       cwd=tmp_path)
    line = one_line_error(result, canary)
    assert "refused the token" in line and "HTTP 403: Missing or invalid credentials" in line
