"""The real ``nbplugins`` command: token check/print, one-line errors, exit codes, --debug."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbplugins", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_version():
    result = run("--version")
    assert result.returncode == 0 and "nbplugins, version" in result.stdout


def test_token_check_shows_claims_but_not_the_token(make_jwt):
    value = make_jwt(sub="alice@egi.eu", vos=("vo.access.egi.eu", "vo.nbplugins.eu"))
    result = run("token", "check", env={"OIDC_ACCESS_TOKEN": value})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "source:   environment variable OIDC_ACCESS_TOKEN" in out
    assert "subject:  alice@egi.eu" in out and "issuer:   https://aai.egi.eu/auth/realms/egi" in out
    assert "VOs:      vo.access.egi.eu, vo.nbplugins.eu" in out and "(in 60 min)" in out
    assert value not in out + result.stderr


def test_token_print_prints_only_the_token(make_jwt):
    value = make_jwt()
    result = run("token", "print", env={"OIDC_ACCESS_TOKEN": value})
    assert result.returncode == 0 and result.stdout.strip() == value


def test_expired_token_check_exits_1_with_one_line(make_jwt):
    value = make_jwt(lifetime=-7200)
    result = run("token", "check", env={"OIDC_ACCESS_TOKEN": value})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "nbplugins: error: environment variable OIDC_ACCESS_TOKEN: the token expired 2.0 h ago"]
    assert value not in result.stdout + result.stderr


@pytest.mark.parametrize("env,expected", [
    ({}, "no token found"),
    ({"OIDC_ACCESS_TOKEN": "xx.yy.zz"}, "environment variable OIDC_ACCESS_TOKEN: malformed JWT"),
    ({"NBPLUGINS_TOKEN_FILE": "/nonexistent/tok"}, "token file /nonexistent/tok: does not exist"),
    ({"NBPLUGINS_OIDC_CLIENT_ID": "c", "NBPLUGINS_OIDC_REFRESH_TOKEN": "refresh-value-1",
      "NBPLUGINS_OIDC_ISSUER": "http://127.0.0.1:9", "NBPLUGINS_TOKEN_SOURCE": "refresh"},
     "cannot reach the issuer"),
])
def test_bad_input_gives_one_line_and_exit_1_without_traceback(env, expected):
    result = run("token", "check", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "refresh-value-1" not in result.stderr


def test_debug_shows_the_traceback():
    result = run("--debug", "token", "check", env={"OIDC_ACCESS_TOKEN": "xx.yy.zz"})
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_refresh_grant_through_the_cli_never_prints_secrets(oidc_provider, oidc_login, tmp_path):
    _, grant = oidc_login()
    config = tmp_path / "config.toml"
    config.write_text(f'[token]\nissuer = "{oidc_provider.url}"\nclient_id = "nbplugins"\n'
                      f'client_secret = "client-secret-value"\nrefresh_token = "{grant["refresh_token"]}"\n')
    result = run("-v", "token", "check", env={"NBPLUGINS_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert f"source:  refresh grant at {oidc_provider.url}" in result.stdout
    assert "opaque" in result.stdout
    assert grant["refresh_token"] not in result.stdout + result.stderr
    assert "client-secret-value" not in result.stdout + result.stderr


def test_token_check_of_an_opaque_token_asks_the_issuer_who_it_is(oidc_provider, oidc_login):
    _, grant = oidc_login("alice@egi.eu")
    value = grant["access_token"]
    result = run("token", "check", env={"OIDC_ACCESS_TOKEN": value, "NBPLUGINS_OIDC_ISSUER": oidc_provider.url})
    assert result.returncode == 0, result.stderr
    rows = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in result.stdout.splitlines()}
    assert rows["format"] == "opaque (not a JWT)" and rows["subject"] == "alice@egi.eu"
    assert rows["VOs"] == "vo.nbplugins.eu (from the issuer's userinfo)"
    assert value not in result.stdout + result.stderr
