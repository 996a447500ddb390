"""D4Science DataMiner, an OGC WPS 1.0.0 service: list, describe, run, wait, bring results home.

owslib parses the capabilities and process descriptions; everything else is done here,
because owslib's WPS client cannot be trusted with it (no timeout, a busy loop on a failing
status URL, ``file://`` references followed, the token sent to any host). Every request goes
through :class:`~nbplugins.http.HttpClient`; Execute is always asynchronous with the status
stored and every complex output by reference; waiting is :func:`nbplugins.services.jobs.wait`;
results, including DataMiner's ``non_deterministic_output`` (an OGR ``FeatureCollection`` of
``ogr:Result`` links), go through :func:`nbplugins.services.results.download`, which sends the
token only to the service's host and ``[d4science] trusted_hosts``.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET  # building requests only; parsing goes through defusedxml
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from defusedxml import ElementTree as SafeET

from nbplugins.errors import ServiceError, TransientError, ValidationError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry, is_transient
from nbplugins.secrets import redact
from nbplugins.services import d4science, jobs
from nbplugins.services.inputs import (
    Complex,
    InputSpec,
    Literal,
    ProcessDescription,
    ProcessSummary,
    close_matches,
    normalise_type,
    prepare,
)
from nbplugins.services.jobs import Job, State
from nbplugins.services.results import Downloader, Output, Result, SubmitWaitDownload

SERVICE = "DataMiner"
WPS = "http://www.opengis.net/wps/1.0.0"
OWS = "http://www.opengis.net/ows/1.1"
XLINK = "http://www.w3.org/1999/xlink"
ND_OUTPUT = "non_deterministic_output"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _safe_to_resend(exc: BaseException) -> bool:
    """Retry a submission only where the service cannot have started a job (refused, 429, 503)."""
    if isinstance(exc, TransientError):
        return exc.status in (429, 503)
    return is_transient(exc) and "ReadTimeout" not in type(exc).__name__


#: One status request, not retried inside: the wait's own retry (at most one request a second) is the only one.
NO_RETRY = Retry(retryable=lambda exc: False)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: Any, name: str) -> Any:
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element: Any, name: str) -> str:
    found = _child(element, name)
    return (found.text or "").strip() if found is not None else ""


def _parse(content: bytes, what: str) -> Any:
    try:
        return SafeET.fromstring(content)
    except (ET.ParseError, ValueError) as exc:
        raise ServiceError(f"{SERVICE}: {what} is not XML ({exc})") from None
    except Exception as exc:  # defusedxml refuses entities and DTDs
        raise ServiceError(f"{SERVICE}: {what} was refused ({type(exc).__name__})") from None


def exception_text(root: Any) -> str:
    """The messages of an OWS ``ExceptionReport`` (PyWPS reports failures this way), one line."""
    parts = []
    for exc in root.iter():
        if _local(exc.tag) != "Exception":
            continue
        texts = [(t.text or "").strip() for t in exc if _local(t.tag) == "ExceptionText"]
        code = exc.get("exceptionCode") or ""
        locator = exc.get("locator") or ""
        locator = "" if locator in ("None", "null") else locator
        text = "; ".join(t for t in texts if t) or code
        parts.append(f"{text} ({locator})" if locator and locator not in text else text)
    return redact(" | ".join(p for p in parts if p) or "the service reported an exception without text")


def job_id(status_url: str) -> str:
    """A job id from a status location: the UUID in it (DataMiner, PyWPS), else its last segment."""
    found = _UUID.findall(status_url)
    if found:
        return found[-1]
    tail = urlsplit(status_url).path.rstrip("/").rsplit("/", 1)[-1]
    return tail.removesuffix(".xml") or status_url


def parse_status(content: bytes, job: Job) -> Job:
    """The job as an ExecuteResponse (or PyWPS ``ExceptionReport``) document says it is."""
    try:
        root = SafeET.fromstring(content)
    except ET.ParseError:
        # a status document caught while the server rewrites it: ask again later
        raise TransientError(f"{SERVICE}: the status document of job {job.id} is not XML yet") from None
    kind = _local(root.tag)
    if kind == "ExceptionReport":
        return job.with_(state=State.FAILED, message=exception_text(root), raw=root)
    if kind != "ExecuteResponse":
        raise ServiceError(f"{SERVICE}: job {job.id}: the status location answered a {kind} document, "
                           "not a WPS ExecuteResponse")
    status = _child(root, "Status")
    word = next(iter(status), None) if status is not None else None
    if word is None:
        raise ServiceError(f"{SERVICE}: job {job.id}: the status document has no Status")
    state = jobs.state_of(_local(word.tag), service=SERVICE)
    message = (word.text or "").strip()
    if state is State.FAILED:
        message = exception_text(word) if any(True for _ in word.iter() if _local(_.tag) == "Exception") \
            else message or "the process failed"
    try:
        progress = int(word.get("percentCompleted")) if word.get("percentCompleted") is not None else None
    except ValueError:
        progress = None
    if state is State.SUCCEEDED:
        progress = 100
    location = root.get("statusLocation") or job.status_url
    return job.with_(state=state, message=redact(message), progress=progress, status_url=location, raw=root)


def parse_feature_collection(root: Any) -> list[Output] | None:
    """DataMiner's ``non_deterministic_output``: one :class:`Output` per ``ogr:Result``; None if not one."""
    if _local(root.tag) != "FeatureCollection":
        return None
    found: list[Output] = []
    for index, result in enumerate((e for e in root.iter() if _local(e.tag) == "Result"), start=1):
        data = _text(result, "Data")
        description = _text(result, "Description")
        media = _text(result, "MimeType") or "application/octet-stream"
        name = description if description and len(description) <= 60 else result.get("fid") or f"result-{index}"
        if data.lower().startswith(("http://", "https://")) or "://" in data:
            found.append(Output(name=name, href=data, media_type=media, description=description))
        else:
            found.append(Output(name=name, value=data, media_type=media or "text/plain", description=description))
    return found


class DataMiner(SubmitWaitDownload):
    """A DataMiner (WPS 1.0.0) endpoint reached with the VRE token."""

    def __init__(self, url: str | None = None, token: str | None = None, *, trusted_hosts: tuple[str, ...] = (),
                 verify: bool | None = None, retry: Retry | None = None) -> None:
        hub = d4science.hub()
        self.url = hub.require_dataminer(url)
        self.verify = hub.verify if verify is None else verify
        self.timeout = hub.timeout
        self.tokens = d4science.HubToken(token)
        first = self.tokens.get()  # an expired hub token is refused here, before anything is sent
        header, scheme = d4science.auth_header(first)
        self.trusted = d4science.trusted_hosts(self.url, (*hub.trusted_hosts, *trusted_hosts))
        common = {"service": SERVICE, "header": header, "scheme": scheme, "verify": self.verify}
        self.http = HttpClient(self.url, token=self.tokens, retry=retry, **common)
        self.submitter = HttpClient(self.url, token=self.tokens, **common,
                                    retry=(retry or Retry()).with_(retryable=_safe_to_resend))
        self.status_http = HttpClient(self.url, token=self.tokens, retry=NO_RETRY, **common)
        self.anonymous = HttpClient(self.url, service=SERVICE, verify=self.verify, retry=retry)
        self.anonymous_status = HttpClient(self.url, service=SERVICE, verify=self.verify, retry=NO_RETRY)
        self._processes: list[ProcessSummary] | None = None
        self._descriptions: dict[str, ProcessDescription] = {}
        self._lock = threading.Lock()

    # -- what the service offers

    def processes(self) -> list[ProcessSummary]:
        """Every process the service offers (GetCapabilities), cached for this client."""
        if self._processes is None:
            from owslib.wps import WebProcessingService

            response = self.http.get("", params={"service": "WPS", "request": "GetCapabilities",
                                                 "AcceptVersions": "1.0.0"})
            _refuse_exception_report(response.content, "GetCapabilities")
            wps = WebProcessingService(self.url, skip_caps=True)
            try:
                wps.getcapabilities(xml=response.content)
            except Exception as exc:
                raise ServiceError(f"{SERVICE}: the capabilities document does not parse ({type(exc).__name__})") \
                    from None
            self._processes = [ProcessSummary(p.identifier, p.title or "", getattr(p, "abstract", "") or "")
                               for p in wps.processes]
        return self._processes

    def resolve(self, process: str) -> str:
        """The full process id for ``process``: itself, or the one id whose last ``.`` part it is."""
        ids = [p.id for p in self.processes()]
        if process in ids:
            return process
        short = [i for i in ids if i.rsplit(".", 1)[-1] == process] \
            or [i for i in ids if i.rsplit(".", 1)[-1].lower() == process.lower()]
        if len(short) == 1:
            return short[0]
        if len(short) > 1:
            raise ValidationError(f"{SERVICE}: process {process!r} is ambiguous: {', '.join(short)}; give the full id")
        shorts = sorted({i.rsplit(".", 1)[-1] for i in ids})
        close = close_matches(process.rsplit(".", 1)[-1], shorts)
        hint = f"; close matches: {', '.join(close)}" if close else "; `nbplugins dataminer list` shows them"
        raise ValidationError(f"{SERVICE} has no process {process!r}{hint}")

    def describe(self, process: str) -> ProcessDescription:
        """The inputs and outputs of ``process`` (DescribeProcess), by full or short id."""
        ident = self.resolve(process)
        with self._lock:
            if ident in self._descriptions:
                return self._descriptions[ident]
        from owslib.wps import WebProcessingService

        response = self.http.get("", params={"service": "WPS", "version": "1.0.0", "request": "DescribeProcess",
                                             "identifier": ident})
        _refuse_exception_report(response.content, f"DescribeProcess {ident}")
        wps = WebProcessingService(self.url, skip_caps=True)
        try:
            found = wps.describeprocess(ident, xml=response.content)
        except Exception as exc:
            raise ServiceError(f"{SERVICE}: the description of {ident} does not parse ({type(exc).__name__})") \
                from None
        description = ProcessDescription(
            id=ident, title=found.title or "", abstract=getattr(found, "abstract", "") or "",
            inputs=tuple(_input_spec(i) for i in found.dataInputs),
            outputs=tuple((o.identifier, o.title or "", _output_kind(o)) for o in found.processOutputs),
        )
        with self._lock:
            self._descriptions[ident] = description
        return description

    # -- running

    def submit(self, process: str, inputs: Mapping[str, Any], *, profile: str | None = None) -> Job:
        """Check the inputs, then start ``process`` asynchronously; the job as first reported."""
        description = self.describe(process)
        values = prepare(description.id.rsplit(".", 1)[-1], description.inputs, inputs, profile=profile)
        body = execute_request(description, values)
        response = self.submitter.post("", data=body, headers={"Content-Type": "text/xml; charset=utf-8"})
        root = _parse(response.content, f"the answer to Execute {description.id}")
        if _local(root.tag) == "ExceptionReport":
            raise ServiceError(f"{SERVICE}: {description.id} refused the request: {exception_text(root)}")
        location = root.get("statusLocation")
        if not location:
            raise ServiceError(f"{SERVICE}: {description.id} did not start an asynchronous job (no statusLocation)")
        job = Job(id=job_id(location), service=SERVICE, process=description.id.rsplit(".", 1)[-1],
                  status_url=location)
        return parse_status(response.content, job)

    def refresh(self, job: Job) -> Job:
        """The job as its status document says now (one request; the wait retries)."""
        if not job.status_url:
            raise ServiceError(f"{SERVICE}: job {job.id} has no status location")
        response = self._client_for(job.status_url, polling=True).get(job.status_url)
        return parse_status(response.content, job)

    def wait(self, job: Job, *, timeout: float | None = None, progress: bool = True,
             cancel: threading.Event | None = None) -> Job:
        """Wait for the job to end (WPS 1.0.0 has no dismissal); raise with the service's message if it failed."""
        retry = jobs.STATUS_RETRY.with_(cancel=cancel) if cancel is not None else None
        final = jobs.wait(job, self.refresh, timeout=timeout or self.timeout, progress=progress, retry=retry)
        return final.check()

    def outputs(self, job: Job) -> list[Output]:
        """The outputs of a finished job; ``non_deterministic_output`` expanded into its files."""
        root = job.raw
        found: list[Output] = []
        outputs = _child(root, "ProcessOutputs") if root is not None else None
        for output in (outputs if outputs is not None else ()):
            name = _text(output, "Identifier")
            title = _text(output, "Title")
            reference = _child(output, "Reference")
            data = _child(output, "Data")
            if reference is not None:
                href = reference.get("href") or reference.get(f"{{{XLINK}}}href") or ""
                media = reference.get("mimeType") or "application/octet-stream"
                expanded = self._expand_reference(name, href, media)
                found.extend(expanded if expanded is not None else
                             [Output(name=name, href=href, media_type=media, description=title)])
            elif data is not None:
                found.extend(_embedded(name, title, data))
        return found

    def downloader(self) -> Downloader:
        """A downloader that sends the token only to the service's host and the trusted ones."""
        return Downloader(headers=d4science.headers_for(self.tokens.get()), trusted_hosts=self.trusted,
                          verify=self.verify)

    def close(self) -> None:
        for client in (self.http, self.submitter, self.status_http, self.anonymous, self.anonymous_status):
            client.close()

    # -- helpers

    def _client_for(self, url: str, *, polling: bool = False) -> HttpClient:
        """The client for a link the service gave: with the token only for trusted hosts; http(s) only."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise ServiceError(f"{SERVICE}: refusing a {scheme or 'relative'} link from the service ({redact(url)})")
        trusted = (urlsplit(url).hostname or "").lower() in self.trusted
        if polling:
            return self.status_http if trusted else self.anonymous_status
        return self.http if trusted else self.anonymous

    def _expand_reference(self, name: str, href: str, media: str) -> list[Output] | None:
        """The files a referenced ``non_deterministic_output`` lists; None for any other reference."""
        if name != ND_OUTPUT and "d4science" not in media:
            return None
        response = self._client_for(href).get(href)
        root = _parse(response.content, f"output {name}")
        return parse_feature_collection(root)


def _refuse_exception_report(content: bytes, what: str) -> None:
    if b"ExceptionReport" in content[:400]:
        root = _parse(content, what)
        if _local(root.tag) == "ExceptionReport":
            raise ServiceError(f"{SERVICE}: {what}: {exception_text(root)}")


def _output_kind(output: Any) -> str:
    kind = (output.dataType or "").lower()
    return "complex" if "complex" in kind else "bbox" if "boundingbox" in kind else "literal"


def _input_spec(item: Any) -> InputSpec:
    """An owslib WPS ``Input`` as an :class:`InputSpec`."""
    kind_word = (item.dataType or "").lower()
    kind = "complex" if "complexdata" in kind_word else "bbox" if "boundingbox" in kind_word else "literal"
    allowed = tuple(v for v in (item.allowedValues or ()) if v is not None and str(v) != "AnyValue")
    formats = tuple(f.mimeType for f in (item.supportedValues or ()) if getattr(f, "mimeType", None)) \
        if kind == "complex" else ()
    default = item.defaultValue if kind == "literal" else None
    return InputSpec(
        name=item.identifier, kind=kind, data_type=normalise_type(item.dataType) if kind == "literal" else "string",
        min_occurs=max(0, item.minOccurs if item.minOccurs is not None and item.minOccurs >= 0 else 1),
        max_occurs=None if item.maxOccurs is None or item.maxOccurs < 0 or item.maxOccurs > 10**6 else item.maxOccurs,
        allowed=allowed, default=default, formats=formats, title=item.title or "",
    )


def _embedded(name: str, title: str, data: Any) -> list[Output]:
    """Outputs embedded in the response: literal values, or complex data (a FeatureCollection expands)."""
    content = next(iter(data), None)
    if content is None:
        return []
    kind = _local(content.tag)
    if kind == "LiteralData":
        return [Output(name=name, value=(content.text or "").strip(), media_type="text/plain", description=title)]
    media = content.get("mimeType") or "application/octet-stream"
    children = list(content)
    if children:
        expanded = parse_feature_collection(children[0])
        if expanded is not None:
            return expanded
        return [Output(name=name, value=ET.tostring(children[0], encoding="unicode"), media_type=media,
                       description=title)]
    text = (content.text or "").strip()
    if text.startswith("<"):
        try:
            expanded = parse_feature_collection(SafeET.fromstring(text))
        except Exception:
            expanded = None
        if expanded is not None:
            return expanded
    if content.get("encoding", "").lower() == "base64":
        import base64

        return [Output(name=name, value=base64.b64decode(text), media_type=media, description=title)]
    return [Output(name=name, value=text, media_type=media, description=title)]


def execute_request(description: ProcessDescription, values: list[Literal | Complex]) -> bytes:
    """A WPS 1.0.0 Execute document: asynchronous, status stored, every complex output by reference."""
    ET.register_namespace("wps", WPS)
    ET.register_namespace("ows", OWS)
    ET.register_namespace("xlink", XLINK)
    root = ET.Element(f"{{{WPS}}}Execute", {"service": "WPS", "version": "1.0.0"})
    ET.SubElement(root, f"{{{OWS}}}Identifier").text = description.id
    data_inputs = ET.SubElement(root, f"{{{WPS}}}DataInputs")
    for value in values:
        element = ET.SubElement(data_inputs, f"{{{WPS}}}Input")
        ET.SubElement(element, f"{{{OWS}}}Identifier").text = value.name
        if isinstance(value, Literal):
            data = ET.SubElement(element, f"{{{WPS}}}Data")
            ET.SubElement(data, f"{{{WPS}}}LiteralData").text = value.text()
        elif value.href is not None:
            attrs = {f"{{{XLINK}}}href": value.href, "method": "GET"}
            if value.media_type:
                attrs["mimeType"] = value.media_type
            ET.SubElement(element, f"{{{WPS}}}Reference", attrs)
        else:
            data = ET.SubElement(element, f"{{{WPS}}}Data")
            attrs = {}
            if value.media_type:
                attrs["mimeType"] = value.media_type
            if value.encoding:
                attrs["encoding"] = value.encoding
            ET.SubElement(data, f"{{{WPS}}}ComplexData", attrs).text = value.data
    form = ET.SubElement(root, f"{{{WPS}}}ResponseForm")
    document = ET.SubElement(form, f"{{{WPS}}}ResponseDocument",
                             {"storeExecuteResponse": "true", "status": "true", "lineage": "false"})
    for name, _title, kind in description.outputs:
        attrs = {"asReference": "true"} if kind == "complex" else {}
        output = ET.SubElement(document, f"{{{WPS}}}Output", attrs)
        ET.SubElement(output, f"{{{OWS}}}Identifier").text = name
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def run(process: str, inputs: Mapping[str, Any], dest: str, *, url: str | None = None, token: str | None = None,
        timeout: float | None = None, unpack: bool = False, progress: bool = True,
        profile: str | None = None) -> list[Result]:
    """Run one DataMiner process and download its results (what the template calls)."""
    client = DataMiner(url, token)
    try:
        return client.run(process, inputs, dest, timeout=timeout, unpack=unpack, progress=progress, profile=profile)
    finally:
        client.close()
