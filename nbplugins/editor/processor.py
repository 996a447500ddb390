"""Elyra's local runtime, run by nbplugins: the editor's Run button and ``elyra-pipeline run``.

Elyra's own local processor runs one node at a time and executes each notebook in place. This
processor (entry point ``nbplugins`` in ``elyra.pipeline.processors``, type LOCAL) hands the
pipeline Elyra parsed to nbplugins' runner instead: independent nodes in parallel, every node
in its own folder under ``<root>/runs/<pipeline>-<time>/`` (notebooks never modified), secret
references in env vars (``@oidc``, ``@env:NAME``, ``@file:PATH``) resolved into the kernel's
environment and scrubbed from every output, ``run.json`` and ``report.html``.

It calls itself ``local`` (and so replaces Elyra's) only when enabled, see
:mod:`nbplugins.editor.switch`; otherwise it registers as ``nbplugins-dormant`` and nothing
reaches it, so installing nbplugins changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

from elyra.pipeline.component_catalog import ComponentCache
from elyra.pipeline.processor import PipelineProcessor, PipelineProcessorResponse
from elyra.pipeline.runtime_type import RuntimeProcessorType
from traitlets import Int, List, Unicode

from nbplugins import paths, secrets
from nbplugins.editor import switch
from nbplugins.errors import NbpluginsError
from nbplugins.events import Kind

DORMANT = "nbplugins-dormant"
#: The name Elyra's local processor gets in a process where nbplugins takes over without a filter.
ELYRA_RENAMED = "elyra-local"


class PipelineRunError(RuntimeError):
    """A pipeline that could not start or did not succeed; Elyra shows ``message`` under ``reason``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(secrets.redact(message))
        self.reason = reason


class NbpluginsRunResponse(PipelineProcessorResponse):
    """What the editor's dialog shows: the report (as the run's details) and the run folder."""

    _type = RuntimeProcessorType.LOCAL
    _name = "local"

    def __init__(self, *, run_dir: Path, folder: str, report_url: str, folder_url: str, summary: str) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.report = run_dir / "report.html"
        self.run_url = report_url  # the dialog links it as "Run Details"
        self.object_storage_url = folder_url  # ... and this as where "the results and outputs are"
        self.object_storage_path = folder
        self.summary = summary

    def to_json(self) -> dict[str, Any]:
        return {"platform": self.type, "processor": "nbplugins", "run_url": self.run_url,
                "object_storage_url": self.object_storage_url, "object_storage_path": self.object_storage_path,
                "run_dir": str(self.run_dir), "report": str(self.report), "summary": self.summary}


class NbpluginsProcessor(PipelineProcessor):
    """Runs local pipelines with :mod:`nbplugins.pipelines.runner` (parallel, untouched notebooks, a record)."""

    _type = RuntimeProcessorType.LOCAL
    _name = "local"

    jobs = Int(2, config=True, help="Nodes run at once.")
    runs_dir = Unicode("runs", config=True,
                       help="Where run folders go: relative to the server's root folder, or absolute.")
    previous_runtimes = List(default_value=None, allow_none=True, config=True,
                             help="The runtimes filter before `nbplugins elyra enable` (restored by disable).")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        runtimes = self._registry_filter()
        if runtimes is not None:  # the registry applied this filter: it decides
            active = switch.decide(runtimes)
            self.why = f"runtimes filter {runtimes}"
        else:  # no filter in this process (elyra-pipeline reads no Jupyter config): the files decide
            state = switch.status()
            active, self.why = state.active == "nbplugins", state.why
            if active:
                self._take_over()
        self.active = active
        if not active:
            self._name = DORMANT

    def _registry_filter(self) -> list[str] | None:
        section = self.config.get(switch.SECTION, {})
        if switch.KEY in section:
            return list(section[switch.KEY]) if section[switch.KEY] is not None else None
        value = os.environ.get(switch.ENV, "")
        return value.replace(" ", "").split(",") if value else None

    @staticmethod
    def _take_over() -> None:
        """Without a filter every processor loads, keyed by name: Elyra's gives up the name ``local``."""
        from elyra.pipeline.local import local_processor

        local_processor.LocalPipelineProcessor._name = ELYRA_RENAMED

    def get_components(self) -> list[Any]:
        return ComponentCache.get_generic_components()

    def export(self, pipeline: Any, pipeline_export_format: str, pipeline_export_path: str, overwrite: bool) -> Any:
        raise NotImplementedError("Local pipelines does not support export functionality")

    # -- run -------------------------------------------------------------------------------

    def _root(self) -> Path:
        return Path(self.root_dir or os.getcwd()).resolve()

    def _new_run_dir(self, name: str) -> Path:
        base = Path(self.runs_dir).expanduser()
        base = base if base.is_absolute() else self._root() / base
        stem = f"{paths.folder_names([name])[name]}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        run_dir, n = base / stem, 1
        while run_dir.exists():
            n += 1
            run_dir = base / f"{stem}-{n}"
        return run_dir

    def _urls(self, run_dir: Path) -> tuple[str, str, str]:
        """(folder as shown, report URL, folder URL): server URLs inside its root, file URIs elsewhere."""
        server = getattr(self.parent, "serverapp", None)
        try:
            rel = run_dir.relative_to(self._root()).as_posix()
        except ValueError:
            rel = None
        if server is None or rel is None:
            return str(run_dir), (run_dir / "report.html").as_uri(), run_dir.as_uri()
        base = server.base_url if server.base_url.endswith("/") else server.base_url + "/"
        quoted = urllib.parse.quote(rel)
        return rel, f"{base}files/{quoted}/report.html", f"{base}lab/tree/{quoted}"

    def process(self, pipeline: Any) -> NbpluginsRunResponse:
        """Run the pipeline to its end; raise PipelineRunError naming the failed node unless all succeeded."""
        from nbplugins import forkserver

        forkserver.prestart()
        from nbplugins.editor import convert
        from nbplugins.pipelines import runner

        t0 = time.time()
        self.log_pipeline_info(pipeline.name, "processing pipeline with nbplugins")
        try:
            ours, values, saved = convert.from_elyra(pipeline, self._root())
            run_dir = self._new_run_dir(ours.name)
            job = runner.PipelineRun(ours, run_dir, parameters=values, jobs=self.jobs)
        except NbpluginsError as exc:
            raise PipelineRunError(f"{exc}", "Pipeline not run") from None
        if saved is not None:
            self.log.info(f"nbplugins: papermill and pipeline parameters from {saved}")
        folder, report_url, folder_url = self._urls(job.run_dir)
        echo = self.parent is None  # elyra-pipeline: say what happens on stderr
        try:
            with contextlib.closing(job.events()) as events:
                for event in events:
                    if event.kind in (Kind.FINISHED, Kind.FAILED, Kind.SKIPPED):
                        self.log_pipeline_info(pipeline.name, event.line(), operation_name=event.subject,
                                               duration=event.duration)
                    if echo and event.kind not in (Kind.RUN_STARTED, Kind.RUN_FINISHED):
                        print(secrets.redact(event.line()), file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - the dialog gets one redacted line
            raise PipelineRunError(f"{ours.name}: the run stopped: {type(exc).__name__}: {exc}; run folder {folder}",
                                   "Pipeline run failed") from None
        summary = job.summary()
        self.log_pipeline_info(pipeline.name, f"{summary}; run folder {job.run_dir}", duration=time.time() - t0)
        if echo:
            print(f"{summary}\nrecord: {job.record_path}\nreport: {job.run_dir / 'report.html'}", file=sys.stderr)
        if job.record["status"] != "succeeded":
            groups = job.by_status()
            failed = groups.get("failed", [])
            first = f" ({failed[0]}: {job.record['nodes'][failed[0]]['error']})" if failed else ""
            raise PipelineRunError(f"{summary}{first}. Run folder: {folder}; report: {folder}/report.html",
                                   "Pipeline run failed")
        return NbpluginsRunResponse(run_dir=job.run_dir, folder=folder, report_url=report_url,
                                    folder_url=folder_url, summary=summary)
