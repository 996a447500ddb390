"""OGC API - Processes 1.x: list, describe, execute, status, results, dismiss, on any server.

A service is a URL (the landing page under which ``/processes`` and ``/jobs`` live) with an
optional Bearer token, or a ``[processes.NAME]`` section of the config. D4Science's CCP is one
such service with ``auth = "uma"``: its Bearer token is a UMA token for the VRE context
(:mod:`nbplugins.services.uma`), renewed on a 401. Execution is always asynchronous
(``Prefer: respond-async``, answered 201 with the job's ``Location``); waiting is
:func:`nbplugins.services.jobs.wait`, which dismisses the job (``DELETE /jobs/{id}``) on
Ctrl-C; results (links and inline values) go through :func:`nbplugins.services.results.download`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from nbplugins import config as config_mod
from nbplugins.errors import ConfigError, ServiceError, TransientError, ValidationError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry, is_transient
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
from nbplugins.tokens import StaticToken, TokenProvider

AUTH_MODES = ("none", "bearer", "uma")
JSON = "application/json"
#: One status request, not retried inside: the wait's own retry (at most one request a second) is the only one.
NO_RETRY = Retry(retryable=lambda exc: False)


def _safe_to_resend(exc: BaseException) -> bool:
    """Retry an execution request only where no job can have started (refused, 429, 503)."""
    if isinstance(exc, TransientError):
        return exc.status in (429, 503)
    return is_transient(exc) and "ReadTimeout" not in type(exc).__name__


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class Processes(SubmitWaitDownload):
    """One OGC API - Processes service: its URL, how it authenticates, and which hosts it trusts."""

    def __init__(self, url: str, *, auth: str = "none", token: str | None = None, context: str | None = None,
                 token_endpoint: str | None = None, trusted_hosts: tuple[str, ...] | list[str] = (),
                 verify: bool | str = True, name: str | None = None, retry: Retry | None = None) -> None:
        if auth not in AUTH_MODES:
            raise ConfigError(f"processes service {name or url}: auth must be one of {', '.join(AUTH_MODES)}, "
                              f"not {auth!r}")
        self.url = d4science.check_http_url(url, f"processes service {name or url}").rstrip("/")
        self.name = name or urlsplit(self.url).netloc
        self.auth = auth
        self.verify = verify
        self.tokens = self._provider(auth, token, context, token_endpoint)
        self.trusted = d4science.trusted_hosts(self.url, tuple(trusted_hosts))
        common = {"service": self.name, "token": self.tokens, "verify": verify}
        self.http = HttpClient(self.url, retry=retry, **common)
        self.submitter = HttpClient(self.url, retry=(retry or Retry()).with_(retryable=_safe_to_resend), **common)
        self.status_http = HttpClient(self.url, retry=NO_RETRY, **common)
        self._processes: list[ProcessSummary] | None = None
        self._descriptions: dict[str, ProcessDescription] = {}
        self._lock = threading.Lock()

    def _provider(self, auth: str, token: str | None, context: str | None,
                  token_endpoint: str | None) -> TokenProvider | None:
        if auth == "none":
            return None
        if auth == "bearer":
            return StaticToken(token, f"processes service {self.name} token") if token else d4science.AccessToken()
        from nbplugins.services.uma import UmaToken

        hub = d4science.hub()
        return UmaToken(token_endpoint or hub.token_endpoint, hub.require_context(context),
                        d4science.AccessToken(token), verify=self.verify)

    # -- what the service offers

    def processes(self) -> list[ProcessSummary]:
        """Every process the service offers (``GET /processes``), cached for this client."""
        if self._processes is None:
            body = self._json(self.http.get("processes", params={"limit": 10000}, headers={"Accept": JSON}),
                              "the process list")
            items = body.get("processes", []) if isinstance(body, dict) else body
            self._processes = [ProcessSummary(str(p.get("id") or p.get("identifier")), str(p.get("title") or ""),
                                              str(p.get("description") or "")) for p in items if isinstance(p, dict)]
        return self._processes

    def describe(self, process: str) -> ProcessDescription:
        """The inputs and outputs of ``process`` (``GET /processes/{id}``); an unknown id lists close matches."""
        with self._lock:
            if process in self._descriptions:
                return self._descriptions[process]
        response = self.http.get(f"processes/{quote(process, safe='')}", headers={"Accept": JSON}, allow=(404,))
        if response.status_code == 404:
            ids = [p.id for p in self.processes()]
            close = close_matches(process, ids)
            hint = f"; close matches: {', '.join(close)}" if close else \
                f"; `nbplugins processes --service {self.name} list` shows them"
            raise ValidationError(f"{self.name} has no process {process!r}{hint}")
        description = parse_description(self._json(response, f"the description of {process}"), process)
        with self._lock:
            self._descriptions[process] = description
        return description

    # -- running

    def submit(self, process: str, inputs: Mapping[str, Any], *, profile: str | None = None) -> Job:
        """Check the inputs, then start ``process`` asynchronously; the job as first reported."""
        description = self.describe(process)
        values = prepare(description.id, description.inputs, inputs, profile=profile)
        body = {"inputs": execute_inputs(description, values)}
        response = self.submitter.post(f"processes/{quote(description.id, safe='')}/execution", json=body,
                                       headers={"Prefer": "respond-async", "Accept": JSON})
        location = response.headers.get("Location")
        answer = self._json(response, f"the answer to executing {description.id}", empty_ok=True)
        ident = (answer.get("jobID") or answer.get("id")) if isinstance(answer, dict) else None
        if location:
            location = urljoin(self.url + "/", location)
            ident = ident or location.rstrip("/").rsplit("/", 1)[-1]
        if not ident:
            raise ServiceError(f"{self.name}: executing {description.id} started no asynchronous job "
                               f"(HTTP {response.status_code}, no Location and no jobID)")
        job = Job(id=str(ident), service=self.name, process=description.id,
                  status_url=location or f"{self.url}/jobs/{quote(str(ident), safe='')}")
        if isinstance(answer, dict) and "status" in answer:
            return self._job_from(answer, job)
        return job

    def status(self, job: Job | str) -> Job:
        """The job as ``GET /jobs/{id}`` says it is now (one request; the wait retries)."""
        job = self._as_job(job)
        response = self.status_http.get(self._job_url(job), headers={"Accept": JSON}, allow=(404,))
        if response.status_code == 404:
            raise ServiceError(f"{self.name}: no job {job.id} (dismissed, expired, or never there)", 404)
        return self._job_from(self._json(response, f"the status of job {job.id}"), job)

    def dismiss(self, job: Job | str) -> Job:
        """Cancel a running job or remove a finished one (``DELETE /jobs/{id}``)."""
        job = self._as_job(job)
        response = self.http.delete(self._job_url(job), headers={"Accept": JSON}, allow=(404, 410))
        if response.status_code in (404, 410):
            raise ServiceError(f"{self.name}: no job {job.id} to dismiss", response.status_code)
        answer = self._json(response, f"the dismissal of job {job.id}", empty_ok=True)
        if isinstance(answer, dict) and "status" in answer:
            return self._job_from(answer, job)
        return job.with_(state=State.DISMISSED, message="dismissed")

    def wait(self, job: Job, *, timeout: float | None = None, progress: bool = True,
             cancel: threading.Event | None = None) -> Job:
        """Wait for the job to end, dismissing it on Ctrl-C; raise with the service's message if it failed."""
        retry = jobs.STATUS_RETRY.with_(cancel=cancel) if cancel is not None else None
        final = jobs.wait(job, self.status, timeout=timeout or d4science.hub().timeout, dismiss=self.dismiss,
                          progress=progress, retry=retry)
        return final.check()

    def outputs(self, job: Job | str) -> list[Output]:
        """The results of a successful job (``GET /jobs/{id}/results``): links and inline values."""
        job = self._as_job(job)
        response = self.http.get(f"{self._job_url(job)}/results", headers={"Accept": JSON})
        media = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media and media != JSON and not media.endswith("+json"):
            return [Output(name="result", value=response.content, media_type=media)]
        return parse_results(self._json(response, f"the results of job {job.id}"), base=self.url)

    def downloader(self) -> Downloader:
        """A downloader that sends the Bearer token only to the service's host and the trusted ones."""
        headers = {"Authorization": f"Bearer {self.tokens.get().value}"} if self.tokens is not None else {}
        return Downloader(headers=headers, trusted_hosts=self.trusted, verify=self.verify)

    def close(self) -> None:
        for client in (self.http, self.submitter, self.status_http):
            client.close()

    # -- helpers

    def _as_job(self, job: Job | str) -> Job:
        return job if isinstance(job, Job) else Job(id=str(job), service=self.name, process="")

    def _job_url(self, job: Job) -> str:
        """The job's URL: where the service said it is when that is on the service's own host."""
        if job.status_url and (urlsplit(job.status_url).hostname or "").lower() in self.trusted:
            return job.status_url.rstrip("/")
        return f"{self.url}/jobs/{quote(job.id, safe='')}"

    def _job_from(self, body: Any, job: Job) -> Job:
        if not isinstance(body, dict) or "status" not in body:
            raise ServiceError(f"{self.name}: job {job.id}: the status document has no status")
        progress = body.get("progress")
        return job.with_(
            state=jobs.state_of(str(body["status"]), service=self.name),
            progress=int(progress) if isinstance(progress, (int, float)) and not isinstance(progress, bool) else None,
            message=str(body.get("message") or ""),
            process=job.process or str(body.get("processID") or ""),
            started=_when(body.get("started")) or job.started,
            finished=_when(body.get("finished")) or job.finished,
            raw=body,
        )

    def _json(self, response: Any, what: str, *, empty_ok: bool = False) -> Any:
        if empty_ok and not response.content.strip():
            return {}
        try:
            return response.json()
        except ValueError:
            raise ServiceError(f"{self.name}: {what} is not JSON (HTTP {response.status_code})") from None


def _is_complex(schema: Any) -> bool:
    """Whether a JSON schema describes a file-like (complex) input rather than a literal one."""
    if not isinstance(schema, dict):
        return False
    if "contentMediaType" in schema or "contentEncoding" in schema or schema.get("format") in ("binary", "byte"):
        return True
    if schema.get("type") == "object" and "href" in (schema.get("properties") or {}):
        return True
    alternatives = schema.get("oneOf") or schema.get("anyOf") or []
    return any(_is_complex(a) for a in alternatives if isinstance(a, dict))


def _formats(schema: Any) -> tuple[str, ...]:
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("contentMediaType"), str):
                found.append(node["contentMediaType"])
            for key in ("oneOf", "anyOf", "allOf"):
                for item in node.get(key) or ():
                    visit(item)

    visit(schema)
    return tuple(dict.fromkeys(found))


def _input_spec(name: str, item: Mapping[str, Any]) -> InputSpec:
    """One input of an OGC process description (1.0: a schema, minOccurs, maxOccurs)."""
    schema = item.get("schema") or {}
    many = isinstance(schema, dict) and schema.get("type") == "array" and "minItems" in schema
    min_occurs = item.get("minOccurs", 1)
    max_occurs = item.get("maxOccurs", 1)
    if max_occurs == "unbounded":
        max_occurs = None
    if _is_complex(schema):
        return InputSpec(name=name, kind="complex", min_occurs=int(min_occurs), max_occurs=max_occurs,
                         formats=_formats(schema), title=str(item.get("title") or ""))
    kind = schema.get("type") if isinstance(schema, dict) else None
    if many and isinstance(schema.get("items"), dict):
        kind = schema["items"].get("type")
    return InputSpec(name=name, kind="literal", data_type=normalise_type(kind if isinstance(kind, str) else None),
                     min_occurs=int(min_occurs), max_occurs=max_occurs,
                     allowed=tuple(schema.get("enum") or ()) if isinstance(schema, dict) else (),
                     default=schema.get("default") if isinstance(schema, dict) else None,
                     title=str(item.get("title") or ""))


def parse_description(body: Any, process: str) -> ProcessDescription:
    """An OGC process description (inputs as a map, or as a list with ``id`` in older drafts)."""
    if not isinstance(body, dict):
        raise ServiceError(f"the description of {process} is not a JSON object")
    raw_inputs = body.get("inputs") or {}
    if isinstance(raw_inputs, list):
        raw_inputs = {str(i.get("id")): i for i in raw_inputs if isinstance(i, dict)}
    raw_outputs = body.get("outputs") or {}
    if isinstance(raw_outputs, list):
        raw_outputs = {str(o.get("id")): o for o in raw_outputs if isinstance(o, dict)}
    return ProcessDescription(
        id=str(body.get("id") or process), title=str(body.get("title") or ""),
        abstract=str(body.get("description") or ""),
        inputs=tuple(_input_spec(n, i if isinstance(i, dict) else {}) for n, i in raw_inputs.items()),
        outputs=tuple((n, str((o or {}).get("title") or ""),
                       "complex" if _is_complex((o or {}).get("schema")) else "literal")
                      for n, o in raw_outputs.items()),
    )


def execute_inputs(description: ProcessDescription, values: list[Literal | Complex]) -> dict[str, Any]:
    """The ``inputs`` of an execution request: typed literals, ``{"href"}`` links, ``{"value"}`` inline data."""
    specs = {s.name: s for s in description.inputs}
    grouped: dict[str, list[Any]] = {}
    for value in values:
        if isinstance(value, Literal):
            item: Any = value.value
        elif value.href is not None:
            item = {"href": value.href, **({"type": value.media_type} if value.media_type else {})}
        else:
            item = {"value": value.data, **({"mediaType": value.media_type} if value.media_type else {}),
                    **({"encoding": value.encoding} if value.encoding else {})}
        grouped.setdefault(value.name, []).append(item)
    return {name: items[0] if len(items) == 1 and (specs[name].max_occurs == 1) else items
            for name, items in grouped.items()}


def parse_results(body: Any, *, base: str) -> list[Output]:
    """Outputs of a results document: ``{name: {"href"} | {"value"} | [..] | value}``, links made absolute."""
    found: list[Output] = []

    def add(name: str, item: Any) -> None:
        if isinstance(item, list) and item and all(isinstance(i, dict) and ("href" in i or "value" in i)
                                                   for i in item):
            for index, sub in enumerate(item, start=1):
                add(name if len(item) == 1 else f"{name}-{index}", sub)
            return
        if isinstance(item, dict) and isinstance(item.get("href"), str):
            media = item.get("type") or item.get("mediaType") or "application/octet-stream"
            found.append(Output(name=name, href=urljoin(base + "/", item["href"]), media_type=str(media),
                                description=str(item.get("title") or "")))
            return
        if isinstance(item, dict) and "value" in item and set(item) <= {"value", "mediaType", "encoding", "schema"}:
            value = item["value"]
            media = str(item.get("mediaType") or (JSON if not isinstance(value, str) else "text/plain"))
            if item.get("encoding") == "base64" and isinstance(value, str):
                import base64

                value = base64.b64decode(value)
            found.append(Output(name=name, value=value if isinstance(value, (str, bytes)) else json.dumps(value),
                                media_type=media))
            return
        text = item if isinstance(item, str) else json.dumps(item)
        found.append(Output(name=name, value=text, media_type="text/plain" if isinstance(item, str) else JSON))

    if isinstance(body, dict) and isinstance(body.get("outputs"), (dict, list)) and set(body) <= {"outputs", "links"}:
        body = body["outputs"]  # the 1.0 "document" response
    if isinstance(body, list):
        body = {str(o.get("id") or f"output-{i}"): o for i, o in enumerate(body, start=1) if isinstance(o, dict)}
    if not isinstance(body, dict):
        return [Output(name="result", value=json.dumps(body), media_type=JSON)]
    for name, item in body.items():
        if name == "links":
            continue
        add(str(name), item)
    return found


def service(name_or_url: str | None = None, *, auth: str | None = None, token: str | None = None) -> Processes:
    """A service by ``[processes.NAME]`` name or URL; without one, the only configured service."""
    cfg = config_mod.get()
    configured = cfg.processes
    if not name_or_url:
        if len(configured) == 1:
            name_or_url = next(iter(configured))
        else:
            names = ", ".join(sorted(configured)) or "none configured"
            raise ConfigError(f"which OGC API - Processes service? pass --service NAME or URL ([processes.NAME] "
                              f"sections: {names})")
    if name_or_url in configured:
        section = configured[name_or_url]
        if not section.url:
            raise ConfigError(f"[processes.{name_or_url}] has no url")
        return Processes(section.url, auth=auth or section.auth, token=token or section.token,
                         context=section.context, token_endpoint=section.token_endpoint,
                         trusted_hosts=section.trusted_hosts, verify=section.verify, name=name_or_url)
    if "://" not in name_or_url:
        names = ", ".join(sorted(configured)) or "none configured"
        raise ConfigError(f"no OGC API - Processes service {name_or_url!r} ([processes.NAME] sections: {names}); "
                          "give its URL instead")
    return Processes(name_or_url, auth=auth or ("bearer" if token else "none"), token=token)


def run(process: str, inputs: Mapping[str, Any], dest: str, *, service_name: str | None = None,
        auth: str | None = None, token: str | None = None, timeout: float | None = None, unpack: bool = False,
        progress: bool = True, profile: str | None = None) -> list[Result]:
    """Run one process on a service and download its results (what the template calls)."""
    client = service(service_name, auth=auth, token=token)
    try:
        return client.run(process, inputs, dest, timeout=timeout, unpack=unpack, progress=progress, profile=profile)
    finally:
        client.close()
