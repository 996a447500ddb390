"""A DataMiner-like OGC WPS 1.0.0 test server: real PyWPS 4.x behind a gcube-token check.

Run as a process: ``python -m tests.servers.wps --port P --dir D --token T [--token T2 ...]``.
PyWPS serves ``/wps/WebProcessingService`` (GetCapabilities, DescribeProcess, Execute) with
three processes named like DataMiner's Java classes (``...transducerers.CSV_SUMMARY``,
``...FAILING``, ``...SLEEP``). Asynchronous execution stores its status documents in
``D/outputs`` (PyWPS ``outputpath``) and this server serves them at ``/wps/outputs/`` (PyWPS
``outputurl``), so status locations are http, never ``file://``; running jobs are PyWPS's own
forked processes, logged in a sqlite database in ``D``. Results come back as DataMiner's
``non_deterministic_output``: an OGR ``FeatureCollection`` whose ``ogr:Result`` elements name
files (``d4science:Data``, ``d4science:Description``, ``d4science:MimeType``) served publicly
at ``/files/`` like DataMiner's storage links; one of them names ``localhost`` instead of
``127.0.0.1`` (another host, for the "no token to another host" tests).

Every request except ``/files/`` and ``/_control/`` needs ``gcube-token: T`` or
``Authorization: Bearer T`` (401 otherwise). The control channel (no auth, loopback only):
``GET /_control/count?kind=K``, ``GET /_control/counts``, ``POST /_control/reset``,
``POST /_control/fault?mode=500|401|refuse|none&seconds=S`` (status requests only),
``GET /_control/headers?match=PATH_OR_KIND``, ``POST /_control/tokens`` (JSON list: the
accepted tokens). Request kinds counted: ``capabilities``, ``describe``, ``execute``,
``status`` (a status document), ``results`` (a stored output, e.g. the ND output by
reference), ``file`` (a ``/files/`` link), ``unauthorized`` (answered 401), ``all``.

The control-channel pieces (:class:`Recorder`, :func:`control`, :func:`serve_static`,
:func:`refuse`, :func:`serve`) and the test-side handle :class:`ServiceHandle` are shared
with :mod:`tests.servers.processes`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import io
import json
import mimetypes
import os
import socket
import statistics
import struct
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.servers import harness

PREFIX = "org.gcube.dataanalysis.wps.statisticalmanager.synchserver.mappedclasses.transducerers."
CSV_SUMMARY = PREFIX + "CSV_SUMMARY"
FAILING = PREFIX + "FAILING"
SLEEP = PREFIX + "SLEEP"
WPS_PATH = "/wps/WebProcessingService"
OUTPUTS_PATH = "/wps/outputs/"
FILES_PATH = "/files/"
ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- shared control channel


class Recorder:
    """What a test server saw: request counts by kind, headers, and the status fault in force."""

    def __init__(self, keep: int = 5000) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.seen: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.fault: tuple[str, float] | None = None  # (mode, until monotonic)

    def record(self, kind: str, environ: dict[str, Any]) -> None:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        with self.lock:
            self.counts[kind] += 1
            self.counts["all"] += 1
            self.seen.append({"kind": kind, "path": environ.get("PATH_INFO", ""), "headers": headers})

    def status_fault(self) -> str | None:
        with self.lock:
            if self.fault and time.monotonic() < self.fault[1]:
                return self.fault[0]
            self.fault = None
            return None


def respond(start_response: Callable, status: int, body: bytes | str | dict | list,
            content_type: str = "application/json", headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """Answer a WSGI request with a body (dicts and lists as JSON)."""
    from http import HTTPStatus

    if isinstance(body, dict | list):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    start_response(f"{status} {HTTPStatus(status).phrase}",
                   [("Content-Type", content_type), ("Content-Length", str(len(data))), *headers])
    return [data]


def control(recorder: Recorder, environ: dict[str, Any], start_response: Callable,
            extra: Callable[[str, dict[str, list[str]], bytes], Any] | None = None) -> list[bytes]:
    """The ``/_control/`` endpoints common to both servers; ``extra`` handles the rest (or None)."""
    name = environ["PATH_INFO"].removeprefix("/_control/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    body = _read_body(environ)
    with recorder.lock:
        if name == "count":
            kind = query.get("kind", ["all"])[0]
            return respond(start_response, 200, {"kind": kind, "count": recorder.counts[kind]})
        if name == "counts":
            return respond(start_response, 200, dict(recorder.counts))
        if name == "reset":
            recorder.counts.clear()
            recorder.seen.clear()
            return respond(start_response, 200, {"ok": True})
        if name == "fault":
            mode = query.get("mode", ["none"])[0]
            seconds = float(query.get("seconds", ["0"])[0])
            if mode not in ("500", "401", "refuse", "none"):
                return respond(start_response, 400, {"error": f"unknown fault mode {mode!r}"})
            recorder.fault = None if mode == "none" or seconds <= 0 else (mode, time.monotonic() + seconds)
            return respond(start_response, 200, {"mode": mode, "seconds": seconds})
        if name == "headers":
            match = query.get("match", [""])[0]
            found = [s for s in recorder.seen if s["kind"] == match or (match and match in s["path"])]
            return respond(start_response, 200, found)
    answer = extra(name, query, body) if extra else None
    if answer is None:
        return respond(start_response, 404, {"error": f"no control endpoint {name!r}"})
    return respond(start_response, 200, answer)


def refuse(environ: dict[str, Any]) -> list[bytes]:
    """Close the connection without an answer (the client sees it dropped), as a dying server does."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("refused by the test server's fault injection")


def serve_static(root: Path, relative: str, start_response: Callable, reread_empty: bool = False) -> list[bytes]:
    """A file under ``root`` (404 outside it or when missing).

    ``reread_empty``: PyWPS rewrites status files in place (truncate, then write), so a read can
    land in between and see nothing; reread for up to 0.5 s so the tests do not flake on it.
    """
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return respond(start_response, 404, {"error": "no such file"})
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = path.read_bytes()
    for _ in range(50 if reread_empty else 0):
        if data:
            break
        time.sleep(0.01)
        data = path.read_bytes()
    return respond(start_response, 200, data, kind)


def serve(app: Callable, port: int) -> None:
    """Serve a WSGI app on 127.0.0.1:port, threaded, quietly."""
    import logging

    from werkzeug.serving import run_simple

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    run_simple(harness.HOST, port, app, threaded=True, use_reloader=False, use_debugger=False)


def _read_body(environ: dict[str, Any]) -> bytes:
    """The request body, read once and put back so the app behind can read it too."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


class ServiceHandle:
    """The test process's side of a running test server: its URL and its control channel."""

    def __init__(self, server: harness.ServerProcess, url: str) -> None:
        self.server = server
        self.url = url
        self.base = f"http://{harness.HOST}:{server.port}"

    def _call(self, method: str, name: str, body: Any = None, **query: Any) -> Any:
        from urllib.parse import urlencode

        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        url = f"{self.base}/_control/{name}" + (f"?{urlencode(query)}" if query else "")
        request = urllib.request.Request(url, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return json.loads(answer.read())

    def count(self, kind: str = "all") -> int:
        """Requests of this kind the server answered (or dropped) since the last reset."""
        return int(self._call("GET", "count", kind=kind)["count"])

    def counts(self) -> dict[str, int]:
        return self._call("GET", "counts")

    def reset_counts(self) -> None:
        self._call("POST", "reset")

    def status_fault(self, mode: str, seconds: float) -> None:
        """Status requests answer ``500`` (or ``401``) or are dropped (``refuse``) for ``seconds``."""
        self._call("POST", "fault", mode=mode, seconds=seconds)

    def clear_fault(self) -> None:
        self._call("POST", "fault", mode="none", seconds=0)

    def headers_seen(self, path_or_kind: str) -> list[dict[str, str]]:
        """Headers of the requests whose kind is this, or whose path contains it (oldest first)."""
        return [s["headers"] for s in self._call("GET", "headers", match=path_or_kind)]

    def expire_uma(self) -> None:
        """Every UMA token issued so far is refused from now on (OGC API - Processes server only)."""
        self._call("POST", "expire_uma")

    def log(self) -> str:
        return self.server.log()

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------- the WPS server


class WpsServer(ServiceHandle):
    """A running WPS test server: ``.url`` (the WPS endpoint), ``.token`` and the control channel."""

    def __init__(self, server: harness.ServerProcess, token: str) -> None:
        super().__init__(server, f"http://{harness.HOST}:{server.port}{WPS_PATH}")
        self.token = token

    def set_tokens(self, *tokens: str) -> None:
        """Accept exactly these tokens from now on (none: every request is refused)."""
        self._call("POST", "tokens", list(tokens))


def start(data_dir: Path, token: str | None = None, log_dir: Path | None = None) -> WpsServer:
    """Start the WPS server as a subprocess on a free port; data and PyWPS files under ``data_dir``."""
    token = token or f"{uuid.uuid4()}-{uuid.uuid4().int % 10**9}"  # a legacy gcube token's shape
    port = harness.free_port()
    argv = [sys.executable, "-m", "tests.servers.wps", "--port", str(port), "--dir", str(data_dir),
            "--token", token]
    server = harness.start("wps", argv, port=port, cwd=str(ROOT), log_dir=log_dir, timeout=90,
                           ready=harness.http_ready(f"http://{harness.HOST}:{port}/_control/counts"))
    return WpsServer(server, token)


def _process_classes() -> list[Any]:
    """The DataMiner-like processes (PyWPS imported here: only the server process needs it)."""
    from pywps import ComplexInput, ComplexOutput, Format, LiteralInput, Process
    from pywps.app.exceptions import ProcessError

    def nd_output() -> Any:
        return ComplexOutput("non_deterministic_output", "NonDeterministicOutput",
                             abstract="Output that is not predetermined",
                             supported_formats=[Format("text/xml"), Format("application/d4science")],
                             as_reference=True)

    class CsvSummary(Process):
        def __init__(self) -> None:
            super().__init__(
                self._handler, identifier=CSV_SUMMARY, title="CSV_SUMMARY", version="1.1.0",
                abstract="Summarises one numeric column of a CSV table (mean, max or min).",
                inputs=[
                    ComplexInput("InputTable", "InputTable", abstract="The table [a http link to a CSV file]",
                                 supported_formats=[Format("text/csv")], min_occurs=1, max_occurs=1),
                    LiteralInput("Column", "Column", data_type="string", min_occurs=1,
                                 abstract="The name of a numeric column of the table"),
                    LiteralInput("Operation", "Operation", data_type="string", min_occurs=0,
                                 allowed_values=["mean", "max", "min"], default="mean",
                                 abstract="The summary to compute"),
                    LiteralInput("Rounding", "Rounding", data_type="integer", min_occurs=0,
                                 abstract="Digits to round the result to"),
                ],
                outputs=[nd_output()], store_supported=True, status_supported=True)

        def _handler(self, request: Any, response: Any) -> Any:
            table = request.inputs["InputTable"][0].data
            if isinstance(table, bytes):
                table = table.decode("utf-8", "replace")
            column = request.inputs["Column"][0].data
            operation = request.inputs["Operation"][0].data if "Operation" in request.inputs else "mean"
            rounding = request.inputs["Rounding"][0].data if "Rounding" in request.inputs else None
            response.update_status("Reading the input table", 20)
            rows = list(csv.DictReader(io.StringIO(table)))
            if not rows or column not in rows[0]:
                names = ", ".join(rows[0]) if rows else "none"
                raise ProcessError(f"Column {column} is not in the InputTable; its columns are: {names}")
            try:
                values = [float(r[column]) for r in rows if (r[column] or "").strip()]
            except ValueError as exc:
                raise ProcessError(f"Column {column} is not numeric") from exc
            if not values:
                raise ProcessError(f"Column {column} has no values")
            result = {"mean": statistics.fmean, "max": max, "min": min}[operation](values)
            if rounding is not None:
                result = round(result, int(rounding))
            response.update_status("Writing the summary", 80)
            files = [
                ("summary.csv", f"column,operation,value,count\n{column},{operation},{result},{len(values)}\n",
                 "text/csv", "Summary of the column", harness.HOST),
                ("log.txt", f"CSV_SUMMARY {operation} of {column} over {len(values)} rows: {result}\n",
                 "text/plain", "Log of the computation", harness.HOST),
                ("values.csv", column + "\n" + "\n".join(map(str, values)) + "\n",
                 "text/csv", "The values used, on another host", "localhost"),
            ]
            _publish(self, response, files)
            return response

    class Failing(Process):
        def __init__(self) -> None:
            super().__init__(
                self._handler, identifier=FAILING, title="FAILING", version="1.0.0",
                abstract="Always fails, with a clear message.",
                inputs=[LiteralInput("Reason", "Reason", data_type="string", min_occurs=0,
                                     default="the algorithm found no data to work on")],
                outputs=[nd_output()], store_supported=True, status_supported=True)

        def _handler(self, request: Any, response: Any) -> Any:
            reason = request.inputs["Reason"][0].data if "Reason" in request.inputs else "no data"
            response.update_status("Starting the failing algorithm", 10)
            raise ProcessError(f"FAILING failed: {reason}")

    class Sleep(Process):
        def __init__(self) -> None:
            super().__init__(
                self._handler, identifier=SLEEP, title="SLEEP", version="1.0.0",
                abstract="Sleeps for a while, reporting progress, then returns a small log.",
                inputs=[LiteralInput("Seconds", "Seconds", data_type="float", min_occurs=1,
                                     abstract="How long to sleep")],
                outputs=[nd_output()], store_supported=True, status_supported=True)

        def _handler(self, request: Any, response: Any) -> Any:
            seconds = float(request.inputs["Seconds"][0].data)
            started = time.monotonic()
            end = started + seconds
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(0.25, left))
                done = int(100 * min(1.0, (time.monotonic() - started) / max(seconds, 1e-9)))
                response.update_status("Sleeping", min(done, 99))
            files = [("log.txt", f"slept {seconds} s\n", "text/plain", "Log of the computation", harness.HOST)]
            _publish(self, response, files)
            return response

    return [CsvSummary(), Failing(), Sleep()]


def _publish(process: Any, response: Any, files: list[tuple[str, str, str, str, str]]) -> None:
    """Write the files under ``/files/<job>/`` and DataMiner's ND output naming them."""
    xml = _nd_output(response.uuid, files)
    path = Path(process.workdir) / "non_deterministic_output.xml"
    path.write_text(xml)
    response.outputs["non_deterministic_output"].file = str(path)


def _nd_output(job: Any, files: list[tuple[str, str, str, str, str]]) -> str:
    """Write the files under ``/files/<job>/``; DataMiner's OGR FeatureCollection naming them."""
    folder = Path(os.environ["NBP_WPS_FILES"]) / str(job)
    folder.mkdir(parents=True, exist_ok=True)
    port = os.environ["NBP_WPS_PORT"]
    results = []
    for fid, (name, text, mime, description, host) in enumerate(files):
        (folder / name).write_text(text)
        link = f"http://{host}:{port}{FILES_PATH}{job}/{name}"
        results.append(f'\t\t<ogr:Result fid="F{fid}">\t\t\t<d4science:Data><![CDATA[{link}]]></d4science:Data>\n'
                       f"\t\t\t<d4science:Description><![CDATA[{description}]]></d4science:Description>\n"
                       f"\t\t\t<d4science:MimeType>{mime}</d4science:MimeType>\n\t\t</ogr:Result>\n")
    return ('<ogr:FeatureCollection xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://ogr.maptools.org/ result_8751.xsd" xmlns:ogr="http://ogr.maptools.org/" '
            'xmlns:gml="http://www.opengis.net/gml" xmlns:d4science="http://www.d4science.org">'
            "\n<gml:featureMember>\n" + "".join(results) + "\t</gml:featureMember>\n</ogr:FeatureCollection>")


def _operation(environ: dict[str, Any], body: bytes) -> str:
    """The WPS operation of a request to the service endpoint (GET key-value or POST XML)."""
    if environ["REQUEST_METHOD"] == "GET":
        query = {k.lower(): v for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        return query.get("request", [""])[0].lower()
    from lxml import etree

    try:
        root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return ""
    return etree.QName(root).localname.lower()


KINDS = {"getcapabilities": "capabilities", "describeprocess": "describe", "execute": "execute"}


def build_app(data_dir: Path, tokens: list[str], recorder: Recorder) -> Callable:
    """The PyWPS service behind the token check, the static routes and the control channel."""
    import pywps

    service = pywps.Service(processes=_process_classes(), cfgfiles=[str(data_dir / "pywps.cfg")])
    accepted = set(tokens)
    outputs = data_dir / "outputs"
    files = data_dir / "files"

    def set_tokens(name: str, query: dict, body: bytes) -> Any:
        if name != "tokens":
            return None
        accepted.clear()
        accepted.update(json.loads(body or b"[]"))
        return {"tokens": len(accepted)}

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_control/"):
            return control(recorder, environ, start_response, set_tokens)
        if path.startswith(FILES_PATH):
            recorder.record("file", environ)
            return serve_static(files, path.removeprefix(FILES_PATH), start_response)
        auth = environ.get("HTTP_AUTHORIZATION", "")
        given = environ.get("HTTP_GCUBE_TOKEN") or (auth[7:] if auth.lower().startswith("bearer ") else "")
        if path.startswith(OUTPUTS_PATH):
            relative = path.removeprefix(OUTPUTS_PATH)
            kind = "status" if "/" not in relative and relative.endswith(".xml") else "results"
            recorder.record(kind, environ)
            fault = recorder.status_fault() if kind == "status" else None
            if fault == "refuse":
                return refuse(environ)
            if fault == "500":
                return respond(start_response, 500, "<html><body>Internal Server Error</body></html>", "text/html")
            if fault == "401" or given not in accepted:
                return _unauthorized(recorder, environ, start_response)
            return serve_static(outputs, relative, start_response, reread_empty=kind == "status")
        if path.rstrip("/") != WPS_PATH:
            return respond(start_response, 404, {"error": f"nothing at {path}"})
        body = _read_body(environ)
        recorder.record(KINDS.get(_operation(environ, body), "wps"), environ)
        if given not in accepted:
            return _unauthorized(recorder, environ, start_response)
        return service(environ, start_response)

    return app


def _unauthorized(recorder: Recorder, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
    recorder.record("unauthorized", environ)
    report = ('<?xml version="1.0" encoding="UTF-8"?>\n<ows:ExceptionReport xmlns:ows="http://www.opengis.net/ows/1.1" '
              'version="1.0.0"><ows:Exception exceptionCode="NoApplicableCode"><ows:ExceptionText>'
              "Invalid or missing gcube token</ows:ExceptionText></ows:Exception></ows:ExceptionReport>")
    return respond(start_response, 401, report, "text/xml", [("WWW-Authenticate", 'Bearer realm="d4science"')])


def write_config(data_dir: Path, port: int) -> None:
    """PyWPS's configuration: http output URL, sqlite job log, room for parallel jobs."""
    for sub in ("outputs", "work", "files"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    base = f"http://{harness.HOST}:{port}"
    (data_dir / "pywps.cfg").write_text(
        "[server]\n"
        f"url = {base}{WPS_PATH}\n"
        f"outputurl = {base}{OUTPUTS_PATH.rstrip('/')}\n"
        f"outputpath = {data_dir / 'outputs'}\n"
        f"workdir = {data_dir / 'work'}\n"
        "maxsingleinputsize = 100mb\nmaxrequestsize = 100mb\n"
        "parallelprocesses = 16\nmaxprocesses = 64\n"
        "[processing]\nmode = default\n"
        "[logging]\nlevel = INFO\n"
        f"file = {data_dir / 'pywps.log'}\n"
        f"database = sqlite:///{data_dir / 'pywps.db'}\n"
        "[metadata:main]\nidentification_title = DataMiner (test)\n"
        "identification_abstract = A DataMiner-like WPS for the nbplugins tests\n"
        "provider_name = nbplugins tests\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--token", action="append", default=[])
    args = parser.parse_args(argv)
    data_dir = args.dir.resolve()
    write_config(data_dir, args.port)
    os.environ["NBP_WPS_FILES"] = str(data_dir / "files")
    os.environ["NBP_WPS_PORT"] = str(args.port)
    serve(build_app(data_dir, args.token, Recorder()), args.port)


if __name__ == "__main__":
    from tests.servers.wps import main as _main

    _main()
