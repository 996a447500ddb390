"""A DataMiner-like OGC WPS 1.0.0 test server: real PyWPS 4.x behind a gcube-token check.

Run as a process: ``python -m nbplugins.sandbox.servers.wps --port P --dir D`` with the accepted
tokens in ``NBP_WPS_TOKENS`` (comma-separated, so they never show in a process listing; ``--token T``
works too).

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

The control-channel pieces and the test-side handle :class:`ServiceHandle` live in
:mod:`nbplugins.sandbox.servers.common`, shared with :mod:`nbplugins.sandbox.servers.processes`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from nbplugins.sandbox import harness
from nbplugins.sandbox.servers.common import (  # noqa: F401 - re-exported for the tests' shim
    Recorder,
    ServiceHandle,
    control,
    env_list,
    read_body,
    refuse,
    respond,
    serve,
    serve_static,
)

PREFIX = "org.gcube.dataanalysis.wps.statisticalmanager.synchserver.mappedclasses.transducerers."
CSV_SUMMARY = PREFIX + "CSV_SUMMARY"
FAILING = PREFIX + "FAILING"
SLEEP = PREFIX + "SLEEP"
WPS_PATH = "/wps/WebProcessingService"
OUTPUTS_PATH = "/wps/outputs/"
FILES_PATH = "/files/"
TOKENS_ENV = "NBP_WPS_TOKENS"

# ---------------------------------------------------------------- the WPS server


class WpsServer(ServiceHandle):
    """A running WPS test server: ``.url`` (the WPS endpoint), ``.token`` and the control channel."""

    def __init__(self, server: harness.ServerProcess, token: str) -> None:
        super().__init__(server, f"http://{harness.HOST}:{server.port}{WPS_PATH}")
        self.token = token

    def set_tokens(self, *tokens: str) -> None:
        """Accept exactly these tokens from now on (none: every request is refused)."""
        self._call("POST", "tokens", list(tokens))


def gcube_token() -> str:
    """A new token in a legacy gcube token's shape (``uuid-uuid-number``)."""
    return f"{uuid.uuid4()}-{uuid.uuid4().int % 10**9}"


def start(data_dir: Path, token: str | None = None, log_dir: Path | None = None, *, port: int | None = None,
          detach: bool = False) -> WpsServer:
    """Start the WPS server as a subprocess (on ``port``, else a free one); its files under ``data_dir``."""
    token = token or gcube_token()
    port = port or harness.free_port()
    argv = [sys.executable, "-m", "nbplugins.sandbox.servers.wps", "--port", str(port), "--dir", str(data_dir)]
    server = harness.start("wps", argv, port=port, log_dir=log_dir, timeout=90, env={TOKENS_ENV: token},
                           ready=harness.http_ready(f"http://{harness.HOST}:{port}/_control/counts"),
                           detach=detach)
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
        body = read_body(environ)
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
    parser.add_argument("--token", action="append", default=[],
                        help=f"an accepted token (better: {TOKENS_ENV}, comma-separated)")
    args = parser.parse_args(argv)
    tokens = [*args.token, *env_list(os.environ.pop(TOKENS_ENV, None))]
    data_dir = args.dir.resolve()
    write_config(data_dir, args.port)
    os.environ["NBP_WPS_FILES"] = str(data_dir / "files")
    os.environ["NBP_WPS_PORT"] = str(args.port)
    serve(build_app(data_dir, tokens, Recorder()), args.port)


if __name__ == "__main__":  # run under its importable name, so pickled process objects resolve
    from nbplugins.sandbox.servers.wps import main as _main

    _main()
