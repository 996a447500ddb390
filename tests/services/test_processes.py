"""OGC API - Processes (D4Science CCP) against real pygeoapi behind a Bearer check and a UMA endpoint."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from nbplugins.errors import (
    AuthError,
    Cancelled,
    ConfigError,
    DeadlineExceeded,
    ServiceError,
    ValidationError,
)
from nbplugins.services import processes
from nbplugins.services.jobs import JobFailed, State
from nbplugins.services.processes import Processes, parse_results
from nbplugins.services.results import RESULTS_FILE


@pytest.fixture
def ccp(processes_server, monkeypatch):
    """The hub's environment for CCP: the VRE token and context, the UMA endpoint."""
    monkeypatch.setenv("D4SCIENCE_TOKEN", processes_server.user_token)
    monkeypatch.setenv("D4SCIENCE_CONTEXT", processes_server.context)
    monkeypatch.setenv("D4SCIENCE_TOKEN_ENDPOINT", processes_server.token_endpoint)
    return processes_server


def _client(server) -> Processes:
    return Processes(server.url, auth="uma")


def test_a_run_brings_links_and_inline_values_home_and_unpacks_the_zip(ccp, tmp_path):
    dest = tmp_path / "out"
    results = _client(ccp).run("multi-files", {"count": "3", "prefix": "part"}, str(dest), unpack=True,
                               progress=False)
    landed = {Path(r.location).relative_to(dest).as_posix(): r for r in results}
    assert set(landed) == {"count.json", "output/part-1.txt", "output/part-2.txt", "output/part-3.txt",
                           "output/data/summary.json", "stdout.txt", "stderr.txt"}
    assert (dest / "output" / "part-2.txt").read_text() == "file 2 of 3\n"
    assert (dest / "count.json").read_text() == "3" and landed["count.json"].media_type == "application/json"
    assert not (dest / "output.zip").exists()
    assert json.loads((dest / RESULTS_FILE).read_text()) == [r.as_dict() for r in results]
    assert ccp.count("uma") == 1 and ccp.count("execute") == 1 and ccp.count("unauthorized") == 0
    execute = ccp.headers_seen("execute")[-1]
    assert execute["prefer"] == "respond-async" and execute["authorization"].startswith("Bearer ")


def test_results_go_straight_to_s3(ccp, rclone, bucket, s3_env):
    import boto3

    results = _client(ccp).run("multi-files", {"count": 2}, f"s3://{bucket}/ccp", progress=False)
    client = boto3.client("s3", endpoint_url=rclone.url, region_name="us-east-1",
                          aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"])
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="ccp/")["Contents"]}
    assert {"ccp/output.zip", "ccp/stdout.txt", "ccp/stderr.txt", "ccp/count.json", f"ccp/{RESULTS_FILE}"} <= keys
    assert {r.location for r in results} == {f"s3://{bucket}/ccp/{n}" for n in
                                             ("output.zip", "stdout.txt", "stderr.txt", "count.json")}


def test_a_uma_token_rejected_mid_poll_is_renewed_once_and_the_wait_goes_on(ccp):
    client = _client(ccp)
    job = client.submit("sleep", {"seconds": 3})
    timer = threading.Timer(1.5, ccp.expire_uma)
    timer.start()
    try:
        final = client.wait(job, timeout=60, progress=False)
    finally:
        timer.cancel()
    assert final.state is State.SUCCEEDED
    assert ccp.count("uma") == 2  # the first grant, and one more after the 401
    assert ccp.count("unauthorized") == 1


def test_the_uma_token_is_cached_until_it_expires(ccp):
    client = _client(ccp)
    client.processes()
    client.describe("sleep")
    client.describe("multi-files")
    assert ccp.count("uma") == 1
    uma_request = ccp.headers_seen("uma")[-1]
    assert uma_request["authorization"] == f"Bearer {ccp.user_token}"


def test_a_failing_status_url_costs_at_most_a_request_a_second(ccp):
    client = _client(ccp)
    job = client.submit("sleep", {"seconds": 1})
    ccp.status_fault("500", 4)
    started = time.monotonic()
    final = client.wait(job, timeout=60, progress=False)
    elapsed = time.monotonic() - started
    assert final.state is State.SUCCEEDED
    assert ccp.count("status") <= elapsed + 2


def test_the_deadline_holds_while_the_status_url_refuses_connections(ccp):
    client = _client(ccp)
    job = client.submit("sleep", {"seconds": 20})
    ccp.status_fault("refuse", 30)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.wait(job, timeout=4, progress=False)
    elapsed = time.monotonic() - started
    assert ccp.count("status") <= elapsed + 2
    ccp.clear_fault()
    client.dismiss(job)


def test_a_cancelled_wait_dismisses_the_job(ccp):
    client = _client(ccp)
    job = client.submit("sleep", {"seconds": 30})
    cancel = threading.Event()
    timer = threading.Timer(1.5, cancel.set)
    timer.start()
    with pytest.raises(Cancelled):
        client.wait(job, timeout=60, progress=False, cancel=cancel)
    assert ccp.count("dismiss") == 1
    try:  # pygeoapi forgets a dismissed job; others report it dismissed
        assert client.status(job.id).state is State.DISMISSED
    except ServiceError as exc:
        assert exc.status == 404


def test_status_and_dismiss_by_job_id(ccp):
    client = _client(ccp)
    job = client.submit("sleep", {"seconds": 30})
    seen = client.status(job.id)
    assert seen.id == job.id and seen.state in (State.ACCEPTED, State.RUNNING) and seen.process == "sleep"
    assert client.dismiss(job.id).state is State.DISMISSED
    with pytest.raises(ServiceError, match=r"no job no-such-job"):
        client.status("no-such-job")


def test_a_failed_job_says_what_the_service_said(ccp, tmp_path):
    with pytest.raises(JobFailed, match=r"failing job .* failed: .*failing process failed: nothing to do"):
        _client(ccp).run("failing", {"reason": "nothing to do"}, str(tmp_path / "o"), progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("process", "values", "message"), [
    ("multi-file", {}, r"has no process 'multi-file'; close matches: multi-files"),
    ("multi-files", {"cuont": 3}, r"multi-files has no input 'cuont' .*did you mean count"),
    ("sleep", {}, r"sleep: input 'seconds' is required"),
    ("multi-files", {"count": "three"}, r"multi-files: input 'count' must be an integer, got 'three'"),
    ("multi-files", {"seconds": "soon"}, r"multi-files: input 'seconds' must be a number"),
])
def test_bad_inputs_are_refused_before_anything_is_submitted(ccp, tmp_path, process, values, message):
    with pytest.raises(ValidationError, match=message):
        _client(ccp).run(process, values, str(tmp_path / "o"), progress=False)
    assert ccp.count("execute") == 0


def test_any_server_with_a_plain_bearer_token_or_none(processes_server):
    plain = Processes(processes_server.url, auth="bearer", token=processes_server.api_token)
    assert {p.id for p in plain.processes()} == {"multi-files", "failing", "sleep"}
    assert processes_server.count("uma") == 0
    with pytest.raises(ServiceError, match="HTTP 401"):
        Processes(processes_server.url).processes()


def test_a_wrong_context_is_refused_by_the_uma_grant(ccp, monkeypatch):
    monkeypatch.setenv("D4SCIENCE_CONTEXT", "/d4science.research-infrastructures.eu/D4OS/NotMyVRE")
    with pytest.raises(AuthError, match=r"UMA grant for /d4science.*NotMyVRE was refused \(HTTP 403\)"):
        _client(ccp).processes()


def test_services_come_from_the_config_by_name(ccp, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f'[processes.ccp]\nurl = "{ccp.url}"\nauth = "uma"\ncontext = "{ccp.context}"\n'
                      f'token_endpoint = "{ccp.token_endpoint}"\n')
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(config))
    monkeypatch.delenv("D4SCIENCE_CONTEXT")
    monkeypatch.delenv("D4SCIENCE_TOKEN_ENDPOINT")
    client = processes.service()  # the only one configured
    assert client.name == "ccp" and client.describe("sleep").inputs[0].name == "seconds"
    with pytest.raises(ConfigError, match=r"no OGC API - Processes service 'other' \(\[processes.NAME\] sections: ccp\)"):
        processes.service("other")


def test_the_tokens_never_reach_output_logs_errors_or_results(ccp, make_jwt, canary, monkeypatch, tmp_path, caplog,
                                                              capsys):
    monkeypatch.setenv("D4SCIENCE_TOKEN", make_jwt(jti=canary, lifetime=600))
    dest = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        client = _client(ccp)
        results = client.run("multi-files", {"count": 2}, str(dest), unpack=True)
        uma = client.tokens.get().value
        with pytest.raises(JobFailed) as failed:
            client.run("failing", {"reason": f"leak {uma}"}, str(tmp_path / "f"))
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err, str(failed.value),
             *(p.read_text(errors="replace") for p in dest.rglob("*") if p.is_file())]
    assert results
    assert not [t for t in texts if canary in t or uma in t]


def test_results_documents_of_every_shape_become_outputs():
    outputs = parse_results({"a": {"href": "files/a.csv", "type": "text/csv"}, "n": 3,
                             "v": {"value": {"k": 1}, "mediaType": "application/json"},
                             "many": [{"href": "http://h/1.txt"}, {"href": "http://h/2.txt"}],
                             "links": []}, base="http://svc/api")
    assert [(o.name, o.href, o.value) for o in outputs] == [
        ("a", "http://svc/api/files/a.csv", None), ("n", None, "3"), ("v", None, '{"k": 1}'),
        ("many-1", "http://h/1.txt", None), ("many-2", "http://h/2.txt", None)]
    document = parse_results({"outputs": {"x": {"value": "hi"}}, "links": []}, base="http://svc")
    assert [(o.name, o.value) for o in document] == [("x", "hi")]
