"""The OGC API - Processes server's processes, as pygeoapi ``BaseProcessor`` plugins (loaded by
pygeoapi by their name in this module, in the server process only: importing pygeoapi takes seconds).

``multi-files`` writes ``count`` files and answers, like CCP, an ``output.zip`` of them plus
``stdout``/``stderr`` logs, all links to ``/files/<job>/`` on the server, and an inline
``count``; ``failing`` raises (the job fails with that message); ``sleep`` (input ``seconds``)
reports progress and stops early once dismissed (:data:`DISMISSED`, filled by the front in
:mod:`nbplugins.sandbox.servers.processes`).
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

from nbplugins.sandbox.servers.processes import FILES_PATH

#: Jobs dismissed through ``DELETE /jobs/{id}``: the ``sleep`` process stops when it sees its id.
DISMISSED: set[str] = set()


def _metadata(pid: str, title: str, description: str, inputs: dict, outputs: dict) -> dict:
    return {"version": "1.0.0", "id": pid, "title": {"en": title}, "description": {"en": description},
            "jobControlOptions": ["sync-execute", "async-execute"], "keywords": ["nbplugins", "test"],
            "links": [], "inputs": inputs, "outputs": outputs,
            "example": {"inputs": {k: v.get("schema", {}).get("default", 1) for k, v in inputs.items()}}}


def _input(title: str, schema: dict, min_occurs: int = 0) -> dict:
    return {"title": title, "description": title, "schema": schema, "minOccurs": min_occurs, "maxOccurs": 1}


def _report(job_id: str | None, progress: int, message: str) -> None:
    """Tell the job manager how far the job is (pygeoapi itself only reports 5, 95 and 100)."""
    if not job_id:
        return
    from pygeoapi.config import get_config
    from pygeoapi.process.manager.base import get_manager
    from pygeoapi.util import get_current_datetime

    get_manager(get_config()).update_job(job_id, {"status": "running", "progress": progress,
                                                  "message": message, "updated": get_current_datetime()})


def _processor_base() -> type:
    from pygeoapi.process.base import BaseProcessor

    class Base(BaseProcessor):
        METADATA: dict = {}

        def __init__(self, processor_def: dict) -> None:
            super().__init__(processor_def, self.METADATA)
            self.job_id: str | None = None

        def set_job_id(self, job_id: str) -> None:
            self.job_id = job_id

    return Base


_Base = _processor_base()


class MultiFilesProcessor(_Base):
    """Writes ``count`` text files; results as CCP gives them: a zip and the logs, by link."""

    METADATA = _metadata(
        "multi-files", "Multiple files", "Writes several files and returns them zipped, with its logs.",
        {"count": _input("How many files", {"type": "integer", "minimum": 1, "maximum": 50, "default": 3}),
         "prefix": _input("File name prefix", {"type": "string", "default": "part"}),
         "seconds": _input("Seconds to work first", {"type": "number", "default": 0})},
        {"output": {"title": "Files written", "schema": {"type": "string", "contentMediaType": "application/zip"}},
         "stdout": {"title": "Standard output", "schema": {"type": "string", "contentMediaType": "text/plain"}},
         "stderr": {"title": "Standard error", "schema": {"type": "string", "contentMediaType": "text/plain"}},
         "count": {"title": "Number of files", "schema": {"type": "integer"}}})

    def execute(self, data: dict, outputs: dict | None = None) -> tuple[str, Any]:
        from pygeoapi.process.base import ProcessorExecuteError

        count, prefix = data.get("count", 3), str(data.get("prefix", "part"))
        if not isinstance(count, int) or not 1 <= count <= 50:
            raise ProcessorExecuteError(f"count must be an integer from 1 to 50, not {count!r}")
        if not prefix or "/" in prefix or prefix.startswith("."):
            raise ProcessorExecuteError(f"prefix {prefix!r} is not a plain file name prefix")
        _report(self.job_id, 10, "Writing files")
        time.sleep(float(data.get("seconds", 0) or 0))
        job = self.job_id or uuid.uuid4().hex
        folder = Path(os.environ["NBP_PROC_FILES"]) / job
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for i in range(1, count + 1):
                archive.writestr(f"{prefix}-{i}.txt", f"file {i} of {count}\n")
            archive.writestr("data/summary.json", json.dumps({"files": count}))
        (folder / "output.zip").write_bytes(buffer.getvalue())
        (folder / "stdout.txt").write_text(f"wrote {count} files\n")
        (folder / "stderr.txt").write_text("")
        base = f"{os.environ['NBP_PROC_BASE']}{FILES_PATH}{job}"
        return "application/json", {
            "output": {"href": f"{base}/output.zip", "type": "application/zip", "title": "output.zip"},
            "stdout": {"href": f"{base}/stdout.txt", "type": "text/plain", "title": "stdout"},
            "stderr": {"href": f"{base}/stderr.txt", "type": "text/plain", "title": "stderr"},
            "count": count,
        }


class FailingProcessor(_Base):
    """Always fails; the job's message carries the reason."""

    METADATA = _metadata("failing", "Failing", "Always fails, with a clear message.",
                         {"reason": _input("Why to fail", {"type": "string", "default": "no input data"})},
                         {"never": {"title": "Never written", "schema": {"type": "string"}}})

    def execute(self, data: dict, outputs: dict | None = None) -> tuple[str, Any]:
        from pygeoapi.process.base import ProcessorExecuteError

        raise ProcessorExecuteError(f"failing process failed: {data.get('reason', 'no input data')}")


class SleepProcessor(_Base):
    """Sleeps ``seconds``, reporting progress; stops early when its job was dismissed."""

    METADATA = _metadata("sleep", "Sleep", "Sleeps for a while, reporting progress.",
                         {"seconds": _input("How long to sleep", {"type": "number", "minimum": 0}, 1)},
                         {"slept": {"title": "Seconds slept", "schema": {"type": "number"}}})

    def execute(self, data: dict, outputs: dict | None = None) -> tuple[str, Any]:
        from pygeoapi.process.base import ProcessorExecuteError

        seconds = data.get("seconds")
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ProcessorExecuteError(f"seconds must be a number >= 0, not {seconds!r}")
        started = time.monotonic()
        last = -1
        while (elapsed := time.monotonic() - started) < seconds:
            if self.job_id in DISMISSED:
                raise ProcessorExecuteError("dismissed")
            time.sleep(min(0.1, seconds - elapsed))
            done = int(90 * elapsed / seconds) if seconds else 90
            if done // 10 != last // 10:
                _report(self.job_id, max(done, 10), "Sleeping")
                last = done
        return "application/json", {"slept": seconds}
