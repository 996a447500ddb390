"""The service over real HTTP: the openBIS ELN protocol, base paths, errors, CORS, the access
log, the auth cache and TLS, against the fake openBIS."""

from __future__ import annotations

import re

import psutil
import pytest
import requests

from tests.serve.conftest import (
    ELN,
    IS_ROOT,
    log_lines,
    notebook,
    owned_by,
    snapshot,
    start_service,
)


def test_health_answers_with_the_backends(stack):
    assert requests.get(f"{stack.url}/health", timeout=10).json() == {
        "status": "ok", "homes": "local homes", "auth": "openbis"}
    assert requests.get(f"{stack.url}{ELN}/health", timeout=10).status_code == 200


def test_the_eln_two_phases_dry_run_then_create(stack):
    home = stack.home()
    before = snapshot(home)
    dry = stack.post("TEST", folder="ELN/EXP-1", filename="entry.ipynb", test="True")
    assert dry.status_code == 200, dry.text
    assert dry.json() == {"fileName": "entry.ipynb", "path": str(home / "ELN" / "EXP-1" / "entry.ipynb")}
    assert snapshot(home) == before
    body = notebook()
    made = stack.post(body, folder="ELN/EXP-1", filename="entry.ipynb", test="False")
    assert made.status_code == 200 and made.json() == dry.json()
    assert (home / "ELN" / "EXP-1" / "entry.ipynb").read_text() == body
    assert stack.post("TEST", folder="ELN/EXP-1", filename="entry.ipynb", test="True").json()["fileName"] == \
        "entry 2.ipynb"


@pytest.mark.parametrize("value", ["True", "true", "1", "yes", ""])
def test_any_test_value_but_false_is_a_dry_run(stack, value):
    before = snapshot(stack.home())
    assert stack.post(notebook(), folder="dry", filename="d.ipynb", test=value).status_code == 200
    assert snapshot(stack.home()) == before


def test_without_test_the_notebook_is_created(stack):
    assert stack.post(notebook(), folder="no-test", filename="n.ipynb").status_code == 200
    assert (stack.home() / "no-test" / "n.ipynb").is_file()


@pytest.mark.parametrize("path", ["/", "", ELN, ELN + "/"])
def test_the_service_answers_at_the_root_and_at_the_eln_proxy_path(stack, path):
    assert stack.post("TEST", path=path, folder="p", filename="x.ipynb", test="True").status_code == 200


def test_a_configured_base_path_is_served_too(openbis_server, tmp_path):
    service = start_service("--homes", str(tmp_path / "{user}"), "--openbis", openbis_server.url,
                            "--base-path", "/provision/", log_dir=tmp_path,
                            env={"REQUESTS_CA_BUNDLE": openbis_server.extra["ca"]})
    try:
        assert requests.get(f"{service.url}/provision/health", timeout=10).status_code == 200
        answer = requests.post(f"{service.url}/provision", params={"token": "x"}, timeout=10)
        assert answer.status_code == 400 and "folder, filename" in answer.json()["message"]
        other = requests.post(f"{service.url}/elsewhere", timeout=10)
        assert other.status_code == 404 and "message" in other.json()
    finally:
        service.stop()


@pytest.mark.parametrize("missing", ["token", "folder", "filename"])
def test_a_missing_argument_is_400_naming_it(stack, missing):
    params = {"token": stack.token(), "folder": "f", "filename": "x.ipynb"}
    del params[missing]
    answer = requests.post(stack.url, params=params, data="TEST", timeout=10)
    assert answer.status_code == 400 and missing in answer.json()["message"]


def test_arguments_are_read_from_the_query_string_only(stack):
    form = {"token": stack.token(), "folder": "f", "filename": "x.ipynb", "test": "True"}
    answer = requests.post(stack.url, data=form, timeout=10)  # form-encoded body: not arguments
    assert answer.status_code == 400 and "missing" in answer.json()["message"]


def test_a_repeated_argument_is_refused(stack):
    answer = requests.post(f"{stack.url}/?folder=a&folder=../..&filename=x.ipynb&token={stack.token()}", timeout=10)
    assert answer.status_code == 400 and "more than once" in answer.json()["message"]


def test_an_invalid_token_is_401_and_the_token_is_not_repeated(stack, canary):
    answer = stack.post(notebook(), token=f"{stack.users[0]}-{canary}", folder="f", filename="x.ipynb")
    assert answer.status_code == 401
    assert canary not in answer.text and "invalid or expired" in answer.json()["message"]


def test_a_logged_out_token_is_401(stack):
    token = stack.token()
    requests.post(f"{stack.openbis.url}/_test/expire", json={"token": token}, verify=stack.openbis.extra["ca"],
                  timeout=10)
    assert stack.post("TEST", token=token, folder="f", filename="x.ipynb", test="True").status_code == 401


def test_a_personal_access_token_names_its_owner_not_a_pat_user(stack):
    pat = stack.token(kind="pat")
    assert pat.startswith(f"$pat-{stack.users[0]}-")
    answer = stack.post(notebook(), token=pat, folder="pat", filename="x.ipynb")
    assert answer.status_code == 200, answer.text
    assert answer.json()["path"] == str(stack.home() / "pat" / "x.ipynb")


def test_the_user_comes_from_openbis_not_from_the_token_text(stack):
    """The old service took everything before the last '-' as the user; openBIS is asked here."""
    token = stack.token(stack.users[1])
    answer = stack.post("TEST", token=token, folder="f", filename="x.ipynb", test="True")
    assert answer.json()["path"].startswith(str(stack.home(stack.users[1])))


def test_a_user_without_an_account_or_home_is_404(stack):
    token = stack.token("nbpnobody")
    answer = stack.post(notebook(), token=token, folder="f", filename="x.ipynb")
    assert answer.status_code == 404 and "nbpnobody" in answer.json()["message"]


@pytest.mark.parametrize("body, says", [
    ("{", "not JSON"), ('{"a": 1}', "not a Jupyter notebook"), ("[1, 2]", "not a Jupyter notebook"),
    ('{"cells": "x", "nbformat": 4, "nbformat_minor": 5, "metadata": {}}', "not a valid Jupyter notebook"),
    (b"\xff\xfe", "not UTF-8"), ("TEST", "not JSON"),
])
def test_a_body_that_is_not_a_notebook_is_400_and_nothing_is_written(stack, body, says):
    before = snapshot(stack.home())
    answer = stack.post(body, folder="bad", filename="x.ipynb", test="False")
    assert answer.status_code == 400 and says in answer.json()["message"]
    assert snapshot(stack.home()) == before


def test_get_and_unknown_paths_answer_json_errors(stack):
    got = requests.get(stack.url, timeout=10)
    assert got.status_code == 400 and "POST" in got.json()["message"]
    missing = requests.get(f"{stack.url}/nothing/here", timeout=10)
    assert missing.status_code == 404 and "message" in missing.json()


def test_no_cors_header_without_a_configured_origin(stack):
    answer = stack.post("TEST", folder="f", filename="x.ipynb", test="True", ).headers
    assert "Access-Control-Allow-Origin" not in answer
    preflight = requests.options(stack.url, headers={"Origin": "https://evil.example"}, timeout=10)
    assert preflight.status_code == 403 and "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_is_answered_for_the_configured_origin_only(openbis_server, tmp_path):
    service = start_service("--homes", str(tmp_path / "{user}"), "--openbis", openbis_server.url,
                            "--cors-origin", "https://eln.example.org", log_dir=tmp_path,
                            env={"REQUESTS_CA_BUNDLE": openbis_server.extra["ca"]})
    try:
        ok = requests.options(service.url, headers={"Origin": "https://eln.example.org",
                                                    "Access-Control-Request-Method": "POST"}, timeout=10)
        assert ok.status_code == 204 and ok.headers["Access-Control-Allow-Origin"] == "https://eln.example.org"
        assert "POST" in ok.headers["Access-Control-Allow-Methods"]
        evil = requests.options(service.url, headers={"Origin": "https://evil.example"}, timeout=10)
        assert evil.status_code == 403 and "Access-Control-Allow-Origin" not in evil.headers
        post = requests.post(service.url, headers={"Origin": "https://eln.example.org"}, timeout=10)
        assert post.headers["Access-Control-Allow-Origin"] == "https://eln.example.org"
    finally:
        service.stop()


def test_a_token_is_looked_up_once_then_cached(stack):
    token = stack.token()
    before = stack.stats().get("getSessionInformation", 0)
    for i in range(5):
        assert stack.post("TEST", token=token, folder="c", filename=f"{i}.ipynb", test="True").status_code == 200
    assert stack.stats()["getSessionInformation"] - before == 1


def test_the_access_log_has_user_action_result_and_never_a_token(stack):
    token = stack.token()
    stack.post("TEST", token=token, folder="log", filename="l.ipynb", test="True")
    stack.post("TEST", token=f"{token}x", folder="log", filename="l401.ipynb", test="True")
    lines = log_lines(stack.service, lambda lines: any(line["status"] == 401 for line in lines))
    mine = [line for line in lines if line.get("result") == "l.ipynb"]
    assert mine and mine[-1]["user"] == stack.users[0] and mine[-1]["action"] == "dry-run"
    assert {"time", "remote", "method", "path", "status", "ms"} <= set(mine[-1])
    assert any(line["status"] == 401 for line in lines)
    log = stack.service.log_path.read_text()
    assert all(t not in log for t in stack.tokens)
    assert re.search(r"token=(?!\.\.\.)", log) is None  # only the usage hint's "token=..."


def test_the_service_listens_on_loopback_only_by_default(stack):
    addresses = {c.laddr.ip for c in psutil.Process(stack.service.proc.pid).connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert addresses == {"127.0.0.1"}


def test_an_untrusted_openbis_certificate_is_refused(openbis_server, tmp_path, monkeypatch):
    """The old service verified no certificate; without the test CA the lookup fails, as it should."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    (tmp_path / "u").mkdir()
    service = start_service("--homes", str(tmp_path / "{user}"), "--openbis", openbis_server.url,
                            "--auth-timeout", "2", log_dir=tmp_path)
    try:
        token = requests.post(f"{openbis_server.url}/_test/session", json={"user": "u"},
                              verify=openbis_server.extra["ca"], timeout=10).json()["token"]
        answer = requests.post(service.url, params={"token": token, "folder": "f", "filename": "x.ipynb"},
                               data=notebook(), timeout=30)
        assert answer.status_code == 502 and "certificate" in answer.json()["message"].lower()
        assert token not in answer.text and list((tmp_path / "u").iterdir()) == []
    finally:
        service.stop()


def test_the_service_serves_https_with_cert_and_key(openbis_server, tmp_path):
    from tests.servers.openbis import make_certificate

    cert, key = make_certificate(tmp_path)
    service = start_service("--homes", str(tmp_path / "{user}"), "--openbis", openbis_server.url,
                            "--cert", str(cert), "--key", str(key), log_dir=tmp_path, scheme="https",
                            env={"REQUESTS_CA_BUNDLE": openbis_server.extra["ca"]})
    try:
        assert requests.get(f"{service.url}/health", verify=str(cert), timeout=10).json()["status"] == "ok"
    finally:
        service.stop()


@pytest.mark.skipif(not IS_ROOT, reason="ownership by another user needs a root service")
def test_created_folders_and_files_belong_to_the_user(stack):
    answer = stack.post(notebook(), folder="own/deep", filename="o.ipynb")
    assert answer.status_code == 200
    home = stack.home()
    for path in (home / "own", home / "own" / "deep", home / "own" / "deep" / "o.ipynb"):
        assert owned_by(path, stack.users[0]), path


@pytest.mark.parametrize("args, says", [
    ([], "exactly one home backend"),
    (["--homes", "/h/{user}"], "exactly one auth backend"),
    (["--homes", "/h/{user}", "--openbis", "https://o", "--token-file", "/t"], "exactly one auth backend"),
    (["--homes", "/home", "--openbis", "https://o"], "holding {user}"),
    (["--hub-api", "http://127.0.0.1:1", "--openbis", "https://o"], "NBPLUGINS_HUB_API_TOKEN"),
    (["--homes", "/h/{user}", "--token-file", "/nonexistent/tokens"], "does not exist"),
    (["--homes", "/h/{user}", "--openbis", "https://o", "--max-body", "lots"], "--max-body"),
])
def test_bad_options_give_one_line_and_a_non_zero_exit(args, says, tmp_path):
    import subprocess
    import sys

    (tmp_path / "config.toml").touch()
    done = subprocess.run([sys.executable, "-m", "nbplugins", "serve", "--port", "0", *args], capture_output=True,
                          text=True, timeout=60, env={**__import__("os").environ,
                                                      "NBPLUGINS_CONFIG": str(tmp_path / "config.toml"),
                                                      "NBPLUGINS_HUB_API_TOKEN": "", "JUPYTERHUB_API_TOKEN": ""})
    assert done.returncode != 0 and says in done.stderr and "Traceback" not in done.stderr
