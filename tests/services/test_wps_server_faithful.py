"""The DataMiner-like test server behaves as a WPS 1.0.0 service and as DataMiner does: owslib
reads its capabilities and descriptions and executes on it; asynchronous jobs store http status
documents; results come as DataMiner's non_deterministic_output; the token is checked; the
control channel counts and injects faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from lxml import etree
from owslib.util import ServiceException
from owslib.wps import ComplexDataInput, WebProcessingService

from tests.servers import wps

NS = {"wps": "http://www.opengis.net/wps/1.0.0", "ows": "http://www.opengis.net/ows/1.1",
      "ogr": "http://ogr.maptools.org/", "gml": "http://www.opengis.net/gml", "d4science": "http://www.d4science.org"}
TABLE = "station,temperature,depth\nA,12.5,10\nB,14.0,20\nC,13.25,30\n"


@pytest.fixture(scope="module")
def table_url() -> Iterator[str]:
    """A CSV table served over http by another server, as a user's input link."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            data = TABLE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/table.csv"
    httpd.shutdown()
    httpd.server_close()


def headers(server: wps.WpsServer) -> dict[str, str]:
    return {"gcube-token": server.token}


def status_document(server: wps.WpsServer, location: str, timeout: float = 30) -> etree._Element:
    """Poll a status location until the job is final; the last document."""
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(location, headers=headers(server), timeout=10)
        assert answer.status_code == 200, answer.text
        doc = etree.fromstring(answer.content)
        final = doc.xpath("//wps:Status/wps:ProcessSucceeded|//wps:Status/wps:ProcessFailed", namespaces=NS)
        if final or time.monotonic() > deadline:
            return doc
        time.sleep(0.2)


def execute_async(server: wps.WpsServer, process: str, inputs: list) -> str:
    service = WebProcessingService(server.url, headers=headers(server), skip_caps=True)
    execution = service.execute(process, inputs, output=[("non_deterministic_output", True)])
    assert execution.status == "ProcessAccepted", execution.errors
    return execution.statusLocation


def test_capabilities_list_the_dataminer_processes(wps_server):
    service = WebProcessingService(wps_server.url, headers=headers(wps_server))
    ids = {p.identifier for p in service.processes}
    assert {wps.CSV_SUMMARY, wps.FAILING, wps.SLEEP} <= ids
    assert service.version == "1.0.0"
    assert wps_server.count("capabilities") == 1


def test_describe_process_declares_inputs_as_dataminer_does(wps_server):
    service = WebProcessingService(wps_server.url, headers=headers(wps_server), skip_caps=True)
    process = service.describeprocess(wps.CSV_SUMMARY)
    inputs = {i.identifier: i for i in process.dataInputs}
    assert inputs["InputTable"].dataType == "ComplexData"
    assert inputs["InputTable"].minOccurs == 1
    assert [f.mimeType for f in inputs["InputTable"].supportedValues] == ["text/csv"]
    assert inputs["Column"].dataType == "string" and inputs["Column"].minOccurs == 1
    assert inputs["Operation"].allowedValues == ["mean", "max", "min"]
    assert inputs["Operation"].defaultValue == "mean" and inputs["Operation"].minOccurs == 0
    assert inputs["Rounding"].dataType == "integer" and inputs["Rounding"].minOccurs == 0
    (output,) = process.processOutputs
    assert output.identifier == "non_deterministic_output" and output.dataType == "ComplexData"
    assert process.storeSupported in (True, "true") and process.statusSupported in (True, "true")


@pytest.mark.parametrize("auth", [None, {"gcube-token": "wrong"}, {"Authorization": "Bearer wrong"}])
def test_requests_without_the_token_are_refused(wps_server, auth):
    answer = requests.get(wps_server.url, params={"service": "WPS", "request": "GetCapabilities"},
                          headers=auth or {}, timeout=10)
    assert answer.status_code == 401
    assert "gcube token" in answer.text
    assert wps_server.count("unauthorized") == 1


def test_bearer_and_gcube_token_headers_are_both_accepted(wps_server):
    for auth in ({"gcube-token": wps_server.token}, {"Authorization": f"Bearer {wps_server.token}"}):
        answer = requests.get(wps_server.url, params={"service": "WPS", "request": "GetCapabilities"},
                              headers=auth, timeout=10)
        assert answer.status_code == 200 and b"wps:Capabilities" in answer.content


def test_async_execution_stores_http_status_and_returns_the_nd_output(wps_server, table_url):
    location = execute_async(wps_server, wps.CSV_SUMMARY, [
        ("InputTable", ComplexDataInput(table_url, mimeType="text/csv")), ("Column", "temperature"),
        ("Operation", "max"), ("Rounding", "1")])
    assert location.startswith(wps_server.base + "/wps/outputs/") and location.endswith(".xml")
    doc = status_document(wps_server, location)
    assert doc.xpath("//wps:ProcessSucceeded", namespaces=NS)
    (reference,) = doc.xpath("//wps:Output[ows:Identifier='non_deterministic_output']/wps:Reference",
                             namespaces=NS)
    href = reference.get("href")
    assert href.startswith("http://127.0.0.1:")
    collection = etree.fromstring(requests.get(href, headers=headers(wps_server), timeout=10).content)
    assert etree.QName(collection).localname == "FeatureCollection"
    results = collection.xpath("//gml:featureMember/ogr:Result", namespaces=NS)
    assert [r.get("fid") for r in results] == ["F0", "F1", "F2"]
    found = [(r.findtext("d4science:Data", namespaces=NS), r.findtext("d4science:Description", namespaces=NS),
              r.findtext("d4science:MimeType", namespaces=NS)) for r in results]
    assert [f[2] for f in found] == ["text/csv", "text/plain", "text/csv"]
    assert all(f[1] for f in found)
    summary = requests.get(found[0][0], timeout=10)
    assert summary.status_code == 200
    assert summary.text.splitlines()[1] == "temperature,max,14.0,3"
    assert found[2][0].startswith("http://localhost:")  # another host than the service's
    assert requests.get(found[2][0], timeout=10).status_code == 200
    assert wps_server.count("execute") == 1 and wps_server.count("file") == 2
    seen = wps_server.headers_seen("/values.csv")
    assert seen and "gcube-token" not in seen[0] and "authorization" not in seen[0]


def test_a_failing_process_reports_process_failed_with_its_message(wps_server):
    location = execute_async(wps_server, wps.FAILING, [("Reason", "the table is empty")])
    doc = status_document(wps_server, location)
    text = doc.xpath("string(//wps:ProcessFailed//ows:ExceptionText)", namespaces=NS)
    assert "FAILING failed: the table is empty" in text


def test_a_failing_process_executed_synchronously_is_an_exception_for_owslib(wps_server):
    service = WebProcessingService(wps_server.url, headers=headers(wps_server), skip_caps=True)
    execution = service.execute(wps.FAILING, [])
    assert execution.status in ("ProcessFailed", "Exception")
    assert "FAILING failed" in execution.errors[0].text


def test_the_slow_process_reports_progress_in_its_status_documents(wps_server):
    location = execute_async(wps_server, wps.SLEEP, [("Seconds", "1.5")])
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        doc = etree.fromstring(requests.get(location, headers=headers(wps_server), timeout=10).content)
        (status,) = doc.xpath("//wps:Status/*", namespaces=NS)
        seen.add(etree.QName(status).localname)
        if etree.QName(status).localname == "ProcessSucceeded":
            break
        time.sleep(0.2)
    assert "ProcessStarted" in seen and "ProcessSucceeded" in seen
    assert wps_server.count("status") >= 2


@pytest.mark.parametrize(("inputs", "code", "text"), [
    ([("Operation", "max")], "MissingParameterValue", "Column"),
    ([("Column", "temperature"), ("Operation", "median")], "InvalidParameterValue", "not valid"),
    ([("Column", "temperature"), ("Rounding", "two")], "InvalidParameterValue", "'two'"),
])
def test_bad_inputs_are_refused_with_an_exception_report(wps_server, table_url, inputs, code, text):
    """PyWPS refuses them before any job (not always naming the input: clients check first)."""
    service = WebProcessingService(wps_server.url, headers=headers(wps_server), skip_caps=True)
    with pytest.raises(ServiceException) as raised:
        service.execute(wps.CSV_SUMMARY, [("InputTable", ComplexDataInput(table_url, mimeType="text/csv")), *inputs],
                        output=[("non_deterministic_output", True)])
    report = etree.fromstring(str(raised.value).encode())
    assert report.xpath("string(//ows:Exception/@exceptionCode)", namespaces=NS) == code
    assert text in report.xpath("string(//ows:ExceptionText)", namespaces=NS)
    assert wps_server.count("status") == 0


@pytest.mark.parametrize("mode", ["500", "refuse", "401"])
def test_status_faults_hit_status_documents_only_then_end(wps_server, mode):
    location = execute_async(wps_server, wps.SLEEP, [("Seconds", "0.1")])
    wps_server.status_fault(mode, 30)
    if mode == "refuse":
        with pytest.raises(requests.ConnectionError):
            requests.get(location, headers=headers(wps_server), timeout=10)
    else:
        assert requests.get(location, headers=headers(wps_server), timeout=10).status_code == int(mode)
    capabilities = requests.get(wps_server.url, params={"service": "WPS", "request": "GetCapabilities"},
                                headers=headers(wps_server), timeout=10)
    assert capabilities.status_code == 200
    wps_server.clear_fault()
    assert requests.get(location, headers=headers(wps_server), timeout=10).status_code == 200
    assert wps_server.count("status") == 2


def test_revoked_tokens_are_refused_until_accepted_again(wps_server):
    params = {"service": "WPS", "request": "GetCapabilities"}
    wps_server.set_tokens("a-new-token")
    assert requests.get(wps_server.url, params=params, headers=headers(wps_server), timeout=10).status_code == 401
    assert requests.get(wps_server.url, params=params, headers={"gcube-token": "a-new-token"},
                        timeout=10).status_code == 200
