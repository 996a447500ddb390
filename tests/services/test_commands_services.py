"""``nbplugins dataminer`` and ``nbplugins processes`` as users run them: real processes, real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def nbplugins(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbplugins", *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def wps_env(wps_server, canary) -> dict[str, str]:
    token = f"{canary}-gcube"
    wps_server.set_tokens(token)
    return {"DATAMINER_URL": wps_server.url, "D4SCIENCE_TOKEN": token}


@pytest.fixture
def ccp_env(processes_server) -> dict[str, str]:
    return {"D4SCIENCE_TOKEN": processes_server.user_token, "D4SCIENCE_CONTEXT": processes_server.context,
            "D4SCIENCE_TOKEN_ENDPOINT": processes_server.token_endpoint}


def test_dataminer_list_describe_and_run_with_json(wps_server, wps_env, canary, tmp_path):
    listed = nbplugins("dataminer", "list", env=wps_env)
    assert listed.returncode == 0 and "transducerers.CSV_SUMMARY\tCSV_SUMMARY" not in listed.stdout
    assert {line.split("\t")[0].rsplit(".", 1)[-1] for line in listed.stdout.splitlines()} == {
        "CSV_SUMMARY", "FAILING", "SLEEP"}
    described = nbplugins("dataminer", "describe", "CSV_SUMMARY", env=wps_env)
    assert "Operation (string; optional; default mean; one of mean, max, min)" in described.stdout
    (tmp_path / "t.csv").write_text("x\n1\n3\n")
    ran = nbplugins("dataminer", "run", "CSV_SUMMARY", "-i", f"InputTable={tmp_path / 't.csv'}", "-i", "Column=x",
                    "-o", str(tmp_path / "out"), "--json", env=wps_env)
    assert ran.returncode == 0, ran.stderr
    results = json.loads(ran.stdout)
    assert [Path(r["location"]).name for r in results] == ["summary.csv", "log.txt", "values.csv"]
    assert "succeeded" in ran.stderr and "results" in ran.stderr  # the bars, on stderr
    every = [listed.stdout, listed.stderr, described.stdout, described.stderr, ran.stdout, ran.stderr,
             *(p.read_text() for p in (tmp_path / "out").iterdir())]
    assert not [t for t in every if canary in t]


@pytest.mark.parametrize(("args", "message"), [
    (["CSV_SUMARY", "-i", "Column=x"], "DataMiner has no process 'CSV_SUMARY'; close matches: CSV_SUMMARY"),
    (["CSV_SUMMARY", "-i", "InputTable=/no/such.csv", "-i", "Column=x"], "input 'InputTable': /no/such.csv is neither"),
    (["CSV_SUMMARY", "-i", "Column"], "input 'Column': expected NAME=VALUE"),
    (["SLEEP", "-i", "Seconds=soon"], "SLEEP: input 'Seconds' must be a number, got 'soon'"),
])
def test_bad_input_is_one_line_and_nothing_is_submitted(wps_server, wps_env, tmp_path, args, message):
    ran = nbplugins("dataminer", "run", *args, "-o", str(tmp_path / "out"), env=wps_env)
    assert ran.returncode == 1
    assert ran.stderr.strip() == f"nbplugins: error: {ran.stderr.strip().removeprefix('nbplugins: error: ')}"
    assert message in ran.stderr and "Traceback" not in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    assert wps_server.count("execute") == 0 and not (tmp_path / "out").exists()


def test_an_expired_hub_token_is_refused_before_sending(wps_server, make_jwt, tmp_path):
    ran = nbplugins("dataminer", "list", env={"DATAMINER_URL": wps_server.url, "D4SCIENCE_TOKEN": make_jwt(lifetime=-9)})
    assert ran.returncode == 1
    assert ran.stderr.strip() == ("nbplugins: error: the D4Science token has expired: reopen the VRE, "
                                  "or configure a refresh")
    assert wps_server.count("all") == 0


def test_processes_list_status_and_dismiss(processes_server, ccp_env, monkeypatch):
    service = ["processes", "--service", processes_server.url, "--auth", "uma"]
    listed = nbplugins(*service, "list", "--json", env=ccp_env)
    assert {p["id"] for p in json.loads(listed.stdout)} == {"multi-files", "failing", "sleep"}
    from nbplugins.services.processes import Processes

    for name, value in ccp_env.items():
        monkeypatch.setenv(name, value)
    job = Processes(processes_server.url, auth="uma").submit("sleep", {"seconds": 30})
    status = nbplugins(*service, "status", job.id, "--json", env=ccp_env)
    assert json.loads(status.stdout)["status"] in ("accepted", "running")
    dismissed = nbplugins(*service, "dismiss", job.id, env=ccp_env)
    assert dismissed.returncode == 0 and dismissed.stdout.startswith(f"{job.id}\tdismissed")
    assert processes_server.count("dismiss") == 1


def test_ctrl_c_dismisses_the_ogc_job(processes_server, ccp_env, tmp_path):
    argv = [sys.executable, "-m", "nbplugins", "processes", "--service", processes_server.url, "--auth", "uma",
            "run", "sleep", "-i", "seconds=60", "-o", str(tmp_path / "out")]
    proc = subprocess.Popen(argv, env={**os.environ, **ccp_env}, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while processes_server.count("status") < 1:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert processes_server.count("dismiss") == 1
    assert "dismissed job" in err and "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
