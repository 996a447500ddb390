"""The CCP-like test server behaves as an OGC API - Processes service (pygeoapi) behind
D4Science's auth: the UMA grant gives a context token, the API wants it, the whole job flow
(list, describe, async execute, status, results, dismiss) works with plain requests and with
OWSLib, and the control channel counts and injects faults."""

from __future__ import annotations

import io
import time
import zipfile
from urllib.parse import quote

import jwt
import owslib.ogcapi
import pytest
import requests
from owslib.ogcapi.processes import Processes

from tests.servers import processes

JSON = {"Accept": "application/json"}


def uma(server: processes.ProcessesServer, user_token: str | None = None, **form: str) -> requests.Response:
    data = {"grant_type": processes.UMA_GRANT, "audience": server.context, **form}
    auth = {"Authorization": f"Bearer {user_token or server.user_token}"}
    return requests.post(server.token_endpoint, data={k: v for k, v in data.items() if v is not None},
                         headers=auth, timeout=10)


def bearer(server: processes.ProcessesServer) -> dict[str, str]:
    answer = uma(server)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}", **JSON}


def wait_final(server: processes.ProcessesServer, location: str, auth: dict, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = requests.get(location, headers=auth, timeout=10).json()
        if status["status"] in ("successful", "failed", "dismissed") or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def execute_async(server: processes.ProcessesServer, process: str, inputs: dict, auth: dict) -> str:
    answer = requests.post(f"{server.url}/processes/{process}/execution", json={"inputs": inputs},
                           headers={**auth, "Prefer": "respond-async"}, timeout=10)
    assert answer.status_code == 201, answer.text
    assert answer.headers["Preference-Applied"] == "respond-async"
    return answer.headers["Location"]


def test_the_uma_grant_gives_a_context_token_with_an_expiry(processes_server, make_jwt):
    for audience in (processes_server.context, quote(processes_server.context, safe="")):
        answer = uma(processes_server, make_jwt(), audience=audience)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 300
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["aud"] == quote(processes_server.context, safe="")
        assert claims["exp"] - claims["iat"] == 300
    assert processes_server.count("uma") == 2


@pytest.mark.parametrize(("change", "status", "error"), [
    ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
    ({"audience": None}, 400, "invalid_request"),
    ({"audience": "/d4science.research-infrastructures.eu/D4OS/OtherVRE"}, 403, "access_denied"),
    ({"user": "not-a-jwt"}, 401, "invalid_grant"),
    ({"user": "expired"}, 401, "invalid_grant"),
    ({"user": "none"}, 401, "invalid_grant"),
])
def test_the_uma_endpoint_refuses_bad_requests_with_oauth_errors(processes_server, make_jwt, change, status, error):
    user = change.pop("user", None)
    if user == "none":
        answer = requests.post(processes_server.token_endpoint, timeout=10, data={
            "grant_type": processes.UMA_GRANT, "audience": processes_server.context})
    else:
        token = make_jwt(lifetime=-60) if user == "expired" else user
        answer = uma(processes_server, token, **change)
    assert answer.status_code == status
    assert answer.json()["error"] == error and answer.json()["error_description"]
    assert "access_token" not in answer.json()


def test_the_api_wants_a_uma_token_and_refuses_it_once_expired(processes_server):
    assert requests.get(f"{processes_server.url}/processes", headers=JSON, timeout=10).status_code == 401
    user = {"Authorization": f"Bearer {processes_server.user_token}", **JSON}
    assert requests.get(f"{processes_server.url}/processes", headers=user, timeout=10).status_code == 401
    auth = bearer(processes_server)
    assert requests.get(f"{processes_server.url}/processes", headers=auth, timeout=10).status_code == 200
    processes_server.expire_uma()
    refused = requests.get(f"{processes_server.url}/processes", headers=auth, timeout=10)
    assert refused.status_code == 401 and "invalid_token" in refused.headers["WWW-Authenticate"]
    assert requests.get(f"{processes_server.url}/processes", headers=bearer(processes_server),
                        timeout=10).status_code == 200
    assert processes_server.count("unauthorized") == 3


def test_uma_tokens_expire_at_their_lifetime(processes_server):
    processes_server.uma_lifetime(1)
    auth = bearer(processes_server)
    time.sleep(2.1)
    assert requests.get(f"{processes_server.url}/processes", headers=auth, timeout=10).status_code == 401


def test_list_and_describe(processes_server):
    auth = bearer(processes_server)
    listed = requests.get(f"{processes_server.url}/processes", headers=auth, timeout=10).json()
    assert {p["id"] for p in listed["processes"]} == {"multi-files", "failing", "sleep"}
    described = requests.get(f"{processes_server.url}/processes/sleep", headers=auth, timeout=10).json()
    assert "async-execute" in described["jobControlOptions"]
    assert described["inputs"]["seconds"]["schema"]["type"] == "number"
    assert processes_server.count("list") == 1 and processes_server.count("describe") == 1


def test_async_execution_gives_a_job_whose_results_link_files_on_the_server(processes_server):
    auth = bearer(processes_server)
    location = execute_async(processes_server, "multi-files", {"count": 4, "prefix": "part"}, auth)
    assert location.startswith(f"{processes_server.url}/jobs/")
    status = wait_final(processes_server, location, auth)
    assert status["status"] == "successful" and status["progress"] == 100
    assert status["jobID"] == location.rsplit("/", 1)[-1] and status["processID"] == "multi-files"
    results = requests.get(f"{location}/results", headers=auth, timeout=10)
    assert results.status_code == 200
    body = results.json()
    assert body["count"] == 4
    assert {body[k]["type"] for k in ("output", "stdout", "stderr")} == {"application/zip", "text/plain"}
    archive = requests.get(body["output"]["href"], timeout=10)
    assert archive.status_code == 200 and archive.headers["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert sorted(names) == ["data/summary.json", "part-1.txt", "part-2.txt", "part-3.txt", "part-4.txt"]
    assert requests.get(body["stdout"]["href"], timeout=10).text == "wrote 4 files\n"
    assert processes_server.count("execute") == 1 and processes_server.count("results") == 1
    assert processes_server.count("status") >= 1 and processes_server.count("file") == 2
    seen = processes_server.headers_seen("output.zip")
    assert seen and "authorization" not in seen[0]


def test_a_failing_job_carries_the_process_message(processes_server):
    auth = bearer(processes_server)
    location = execute_async(processes_server, "failing", {"reason": "the input was empty"}, auth)
    status = wait_final(processes_server, location, auth)
    assert status["status"] == "failed"
    assert "failing process failed: the input was empty" in status["message"]
    assert requests.get(f"{location}/results", headers=auth, timeout=10).status_code == 400


def test_dismiss_stops_a_running_job(processes_server):
    auth = bearer(processes_server)
    location = execute_async(processes_server, "sleep", {"seconds": 30}, auth)
    deadline = time.monotonic() + 10
    while requests.get(location, headers=auth, timeout=10).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    dismissed = requests.delete(location, headers=auth, timeout=10)
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    assert requests.get(location, headers=auth, timeout=10).status_code == 404
    assert processes_server.count("dismiss") == 1


@pytest.mark.parametrize("mode", ["500", "refuse", "401"])
def test_status_faults_hit_job_status_only_then_end(processes_server, mode):
    auth = bearer(processes_server)
    location = execute_async(processes_server, "sleep", {"seconds": 0}, auth)
    processes_server.status_fault(mode, 30)
    if mode == "refuse":
        with pytest.raises(requests.ConnectionError):
            requests.get(location, headers=auth, timeout=10)
    else:
        assert requests.get(location, headers=auth, timeout=10).status_code == int(mode)
    assert requests.get(f"{processes_server.url}/processes", headers=auth, timeout=10).status_code == 200
    processes_server.clear_fault()
    assert requests.get(location, headers=auth, timeout=10).status_code == 200
    assert processes_server.count("status") == 2


def test_owslib_lists_describes_and_executes(processes_server, monkeypatch):
    # OWSLib updates one module-level header dict for every client: keep ours out of it
    monkeypatch.setattr(owslib.ogcapi, "REQUEST_HEADERS", dict(owslib.ogcapi.REQUEST_HEADERS))
    auth = bearer(processes_server)
    client = Processes(processes_server.url, headers=auth)
    assert {p["id"] for p in client.processes()} == {"multi-files", "failing", "sleep"}
    assert client.process("multi-files")["id"] == "multi-files"
    result = client.execute("multi-files", {"count": 2}, response="raw")
    assert result["count"] == 2 and result["output"]["href"].endswith("/output.zip")
    client.execute("sleep", {"seconds": 0}, async_=True)
    assert client.response_headers["Location"].startswith(f"{processes_server.url}/jobs/")
    assert processes_server.count("execute") == 2
