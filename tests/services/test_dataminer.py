"""DataMiner (WPS 1.0.0) against a real PyWPS server: run, results, tokens, bad input, faults."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from nbplugins.errors import AuthError, DeadlineExceeded, TokenExpiredError, ValidationError
from nbplugins.services import dataminer
from nbplugins.services.dataminer import DataMiner, execute_request, parse_feature_collection
from nbplugins.services.inputs import Complex, Literal, ProcessDescription
from nbplugins.services.jobs import JobFailed, State
from nbplugins.services.results import RESULTS_FILE
from tests.servers import wps


@pytest.fixture
def hub(wps_server, monkeypatch):
    """The hub's environment pointing at the test server, with its (legacy gcube) token."""
    monkeypatch.setenv("DATAMINER_URL", wps_server.url)
    monkeypatch.setenv("D4SCIENCE_TOKEN", wps_server.token)
    return wps_server


@pytest.fixture
def table(tmp_path) -> Path:
    path = tmp_path / "table.csv"
    path.write_text("station,temp\nA,1.5\nB,2.5\nC,5\n")
    return path


def test_a_run_brings_every_listed_file_home_with_results_json(hub, table, tmp_path):
    dest = tmp_path / "out"
    results = dataminer.run("CSV_SUMMARY", {"InputTable": str(table), "Column": "temp", "Operation": "max"},
                            str(dest), progress=False)
    assert [(r.name, r.media_type) for r in results] == [
        ("Summary of the column", "text/csv"), ("Log of the computation", "text/plain"),
        ("The values used, on another host", "text/csv")]
    assert (dest / "summary.csv").read_text() == "column,operation,value,count\ntemp,max,5.0,3\n"
    assert (dest / "values.csv").read_text() == "temp\n1.5\n2.5\n5.0\n"
    assert all(Path(r.location).stat().st_size == r.size for r in results)
    assert json.loads((dest / RESULTS_FILE).read_text()) == [r.as_dict() for r in results]
    counts = hub.counts()
    assert counts["execute"] == 1 and counts["results"] == 1 and counts["file"] == 3
    assert counts.get("unauthorized", 0) == 0


def test_a_result_link_to_another_host_gets_no_token(hub, table, tmp_path):
    dataminer.run("CSV_SUMMARY", {"InputTable": str(table), "Column": "temp"}, str(tmp_path / "o"), progress=False)
    own = hub.headers_seen("summary.csv") + hub.headers_seen("log.txt")
    other = hub.headers_seen("values.csv")
    assert len(own) == 2 and all(h.get("gcube-token") == hub.token for h in own)
    assert other and other[0]["host"].startswith("localhost:")
    assert not {k.lower() for k in other[0]} & {"gcube-token", "authorization"}


def test_execute_is_asynchronous_with_every_complex_output_by_reference():
    description = ProcessDescription(id="p.X", outputs=(("non_deterministic_output", "", "complex"),
                                                        ("n", "", "literal")))
    body = execute_request(description, [Literal("Column", "a"), Complex("T", href="https://h/t.csv?a=1&b=2",
                                                                        media_type="text/csv")]).decode()
    assert 'storeExecuteResponse="true"' in body and 'status="true"' in body
    assert '<wps:Output asReference="true"><ows:Identifier>non_deterministic_output' in body
    assert "<wps:Output><ows:Identifier>n</ows:Identifier>" in body
    assert 'xlink:href="https://h/t.csv?a=1&amp;b=2"' in body


def test_a_short_process_name_resolves_and_an_unknown_one_lists_close_matches(hub):
    client = DataMiner()
    assert client.resolve("CSV_SUMMARY") == wps.CSV_SUMMARY
    assert client.resolve("csv_summary") == wps.CSV_SUMMARY
    assert client.resolve(wps.SLEEP) == wps.SLEEP
    assert {p.id for p in client.processes()} == {wps.CSV_SUMMARY, wps.FAILING, wps.SLEEP}
    with pytest.raises(ValidationError, match=r"DataMiner has no process 'CSV_SUMARY'; close matches: CSV_SUMMARY"):
        client.describe("CSV_SUMARY")
    assert hub.count("execute") == 0


@pytest.mark.parametrize(("values", "message"), [
    ({"InputTable": "TABLE", "Column": "temp", "Colour": "red"}, r"CSV_SUMMARY has no input 'Colour'"),
    ({"InputTable": "TABLE"}, r"CSV_SUMMARY: input 'Column' is required"),
    ({"InputTable": "TABLE", "Column": "temp", "Rounding": "2.5"}, r"input 'Rounding' must be an integer"),
    ({"InputTable": "TABLE", "Column": "temp", "Operation": "median"}, r"'Operation' does not allow 'median'"),
    ({"InputTable": "/no/such/table.csv", "Column": "temp"}, r"input 'InputTable': /no/such/table.csv is neither"),
])
def test_bad_inputs_are_refused_before_anything_is_submitted(hub, table, tmp_path, values, message):
    values = {k: (str(table) if v == "TABLE" else v) for k, v in values.items()}
    with pytest.raises(ValidationError, match=message):
        dataminer.run("CSV_SUMMARY", values, str(tmp_path / "o"), progress=False)
    assert hub.count("execute") == 0
    assert not (tmp_path / "o").exists()


def test_a_failed_job_says_what_the_service_said(hub, tmp_path):
    with pytest.raises(JobFailed, match=r"FAILING job .* failed: .*FAILING failed: the input was empty") as info:
        dataminer.run("FAILING", {"Reason": "the input was empty"}, str(tmp_path / "o"), progress=False)
    assert info.value.job.state is State.FAILED
    assert not (tmp_path / "o").exists()


def test_a_jwt_goes_as_bearer_and_an_expired_one_is_refused_before_sending(hub, make_jwt, tmp_path, monkeypatch):
    fresh = make_jwt(lifetime=600)
    hub.set_tokens(fresh)
    monkeypatch.setenv("D4SCIENCE_TOKEN", fresh)
    DataMiner().processes()
    seen = hub.headers_seen("capabilities")[-1]
    assert seen["authorization"] == f"Bearer {fresh}" and "gcube-token" not in seen
    hub.reset_counts()
    monkeypatch.delenv("D4SCIENCE_TOKEN")
    monkeypatch.setenv("GCUBE_TOKEN", make_jwt(lifetime=-60))  # the older name works the same
    with pytest.raises(TokenExpiredError, match=r"^the D4Science token has expired: reopen the VRE, or configure "
                                                r"a refresh$"):
        dataminer.run("CSV_SUMMARY", {}, str(tmp_path / "o"), progress=False)
    assert hub.count("all") == 0


def test_a_refused_token_is_an_auth_error_without_the_token(hub, canary, monkeypatch):
    monkeypatch.setenv("D4SCIENCE_TOKEN", canary)
    with pytest.raises(AuthError) as info:
        DataMiner().processes()
    assert canary not in str(info.value) and "401" in str(info.value)


def test_a_failing_status_url_costs_at_most_a_request_a_second(hub):
    client = DataMiner()
    job = client.submit("SLEEP", {"Seconds": 1})
    hub.status_fault("500", 4)
    started = time.monotonic()
    final = client.wait(job, timeout=60, progress=False)
    elapsed = time.monotonic() - started
    assert final.state is State.SUCCEEDED
    assert hub.count("status") <= elapsed + 2  # one a second on average, plus the first and the last


def test_the_deadline_holds_while_the_status_url_refuses_connections(hub):
    client = DataMiner()
    job = client.submit("SLEEP", {"Seconds": 15})
    hub.status_fault("refuse", 30)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.wait(job, timeout=4, progress=False)
    elapsed = time.monotonic() - started
    assert hub.count("status") <= elapsed + 2
    assert elapsed < 4 + 30  # the fault would have lasted 30 s: the deadline ended the wait, not the fault


def test_a_complex_input_from_s3_goes_as_a_presigned_url_and_results_go_to_s3(hub, rclone, bucket, s3_env):
    import boto3

    client = boto3.client("s3", endpoint_url=rclone.url, region_name="us-east-1",
                          aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"])
    client.put_object(Bucket=bucket, Key="in/table.csv", Body=b"temp\n1\n2\n6\n")
    results = dataminer.run("CSV_SUMMARY", {"InputTable": f"s3://{bucket}/in/table.csv", "Column": "temp"},
                            f"s3://{bucket}/run-1", progress=False)
    assert [r.location for r in results] == [f"s3://{bucket}/run-1/{n}" for n in ("summary.csv", "log.txt",
                                                                                 "values.csv")]
    summary = client.get_object(Bucket=bucket, Key="run-1/summary.csv")["Body"].read()
    assert summary == b"column,operation,value,count\ntemp,mean,3.0,3\n"
    listed = json.loads(client.get_object(Bucket=bucket, Key=f"run-1/{RESULTS_FILE}")["Body"].read())
    assert [r["location"] for r in listed] == [r.location for r in results]


def test_the_token_never_reaches_output_logs_errors_or_results(hub, table, tmp_path, monkeypatch, canary, caplog,
                                                               capsys):
    token = f"{canary}-gcube"
    hub.set_tokens(token)
    monkeypatch.setenv("D4SCIENCE_TOKEN", token)
    dest = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        results = dataminer.run("CSV_SUMMARY", {"InputTable": str(table), "Column": "temp"}, str(dest))
        with pytest.raises(JobFailed) as failed:
            dataminer.run("FAILING", {"Reason": f"token {token}"}, str(tmp_path / "f"))
    captured = capsys.readouterr()
    assert results and hub.count("unauthorized") == 0
    texts = [caplog.text, captured.out, captured.err, str(failed.value),
             *(p.read_text(errors="replace") for p in dest.rglob("*") if p.is_file())]
    assert not [t for t in texts if canary in t]
    assert "token ***" in str(failed.value)  # the service echoed it; the message is scrubbed


def test_the_nd_output_parses_into_one_output_per_result():
    from defusedxml import ElementTree

    xml = ('<ogr:FeatureCollection xmlns:ogr="http://ogr.maptools.org/" '
                                      'xmlns:gml="http://www.opengis.net/gml" xmlns:d4science="http://www.d4science.org">'
                                      '<gml:featureMember><ogr:Result fid="F0"><d4science:Data>'
                                      "<![CDATA[http://h/a.csv]]></d4science:Data><d4science:Description>A table"
                                      "</d4science:Description><d4science:MimeType>text/csv</d4science:MimeType>"
                                      '</ogr:Result><ogr:Result fid="F1"><d4science:Data>42</d4science:Data>'
                                      "<d4science:Description>Answer</d4science:Description>"
                                      "<d4science:MimeType>text/plain</d4science:MimeType></ogr:Result>"
                                      "</gml:featureMember></ogr:FeatureCollection>")
    outputs = parse_feature_collection(ElementTree.fromstring(xml))
    assert [(o.name, o.href, o.value, o.media_type) for o in outputs] == [
        ("A table", "http://h/a.csv", None, "text/csv"), ("Answer", None, "42", "text/plain")]
