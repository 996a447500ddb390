"""Executing a sweep: warm kernels, a journal of finished runs, resume, interruption, Dask.

Kernels come from a warm :class:`~nbplugins.papermill.kernels.KernelPool`, so start-up
overlaps execution; a failed run does not stop the others. Each finished run is appended to
a journal at once, so a killed sweep loses nothing and the same command resumes it; the
journal is compacted into ``sweep.json`` at the end.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nbplugins import files, scraps, secrets
from nbplugins.errors import NbpluginsError, ValidationError
from nbplugins.events import Event, Kind
from nbplugins.papermill import kernels, parameters
from nbplugins.papermill.engine import _load, execute
from nbplugins.sweep.plan import PlannedRun

log = logging.getLogger(__name__)


STATE_FILE = "sweep.json"
JOURNAL = "runs.jsonl"


def _state_path(report_dir: Path) -> Path:
    return report_dir / STATE_FILE


def load_state(report_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished runs of earlier invocations, by output path: the last compacted state, then
    the journal lines of an invocation that did not finish (killed, culled, interrupted)."""
    records: dict[str, dict[str, Any]] = {}
    path = _state_path(report_dir)
    if path.exists():
        try:
            records = {r["output"]: r for r in json.loads(path.read_text())["runs"]}
        except (ValueError, KeyError, TypeError):
            log.warning("%s is unreadable; running every run again", path)
    journal = report_dir / JOURNAL
    if journal.exists():
        with journal.open() as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                    records[record["output"]] = record
                except (ValueError, KeyError, TypeError):  # the line a kill cut short
                    continue
    return records


class Journal:
    """One line per finished run, appended as it finishes: a killed sweep loses no result,
    and the cost per run stays the same whatever the number of runs."""

    def __init__(self, report_dir: Path) -> None:
        self.path = report_dir / JOURNAL
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a")

    def append(self, run: PlannedRun) -> None:
        self._file.write(secrets.redact(json.dumps(_jsonable(asdict(run)))) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _exists(url: str) -> bool:
    """Whether an earlier run's output is still there (through the storage layer's profiles)."""
    from nbplugins.storage import filesystem

    try:
        fs, path = filesystem(url)
        return bool(fs.exists(path))
    except Exception:  # unreachable storage: run it again rather than trust the record
        return False


# ----------------------------------------------------------------------------- runs


def _execute_one(template: str, run: PlannedRun, cwd: str | None, km: Any, credentials: Mapping[str, str] | None,
                 allow_unknown: bool, timeout: float | None = None) -> PlannedRun:
    start = time.monotonic()
    try:
        if "://" not in run.output:
            Path(run.output).parent.mkdir(parents=True, exist_ok=True)
        nb = execute(template, run.output, run.parameters, cwd=cwd, km=km, credentials=credentials,
                     allow_unknown=allow_unknown, timeout=timeout)
        run.status, run.values = "ok", scraps.read(nb)
    except NbpluginsError as exc:
        run.status, run.error = "failed", str(exc)
    except Exception as exc:  # a run's failure is reported with the run, never stops the sweep
        run.status, run.error = "failed", secrets.redact(f"{type(exc).__name__}: {exc}")
    run.duration = time.monotonic() - start
    return run


def _dask_run(template: str, run: PlannedRun, cwd: str | None, allow_unknown: bool, timeout: float | None) -> PlannedRun:
    """Run on a Dask worker: the worker resolves its own credentials, nothing secret travels."""
    return _execute_one(template, run, cwd, None, None, allow_unknown, timeout)


def execute_runs(template: str | os.PathLike[str], runs: list[PlannedRun], *, jobs: int = 2,
                 report_dir: str | os.PathLike[str], force: bool = False, executor: str = "local",
                 scheduler: str | None = None, allow_unknown: bool = False, kernel_name: str | None = None,
                 timeout: float | None = None) -> Iterator[Event[PlannedRun]]:
    """Execute the planned runs, yielding an event as each starts, finishes or fails, or is reused
    (finished by an earlier invocation: its status stays ``skipped`` in ``sweep.json``).

    Each finished run is journalled at once, so the same call after a kill runs only what has
    no finished output. ``timeout`` bounds each run (seconds). Closing the generator early
    (Ctrl-C, SIGTERM) stops the runs' kernels and records the sweep as interrupted.
    """
    template = os.fspath(template)
    report = Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    done = {} if force else load_state(report)
    todo = []
    for r in runs:
        previous = done.get(r.output)
        if previous and previous.get("status") == "ok" and previous.get("parameters") == _jsonable(r.parameters) \
                and _exists(r.output):
            r.status, r.duration, r.values = "skipped", previous.get("duration"), previous.get("values", {})
            yield Event(Kind.REUSED, _subject(r), duration=r.duration, message="finished by an earlier sweep",
                        payload=r)
        else:
            todo.append(r)
    cwd = str(Path(template).resolve().parent) if "://" not in template else None
    journal = Journal(report)
    status = "interrupted"
    try:
        if executor == "dask":
            events = _run_dask(template, todo, cwd, scheduler, allow_unknown, timeout)
        elif executor == "local":
            events = _run_local(template, todo, cwd, jobs, allow_unknown, kernel_name, timeout)
        else:
            raise ValidationError(f"unknown executor {executor!r} (known: local, dask)")
        for event in events:
            if event.kind in (Kind.FINISHED, Kind.FAILED) and event.payload is not None:
                journal.append(event.payload)
            yield event
        status = "finished"
    finally:
        journal.close()
        save_state(report, runs, status)


def _subject(r: PlannedRun) -> str:
    return f"run {r.index}"


def _started(r: PlannedRun) -> Event[PlannedRun]:
    return Event(Kind.STARTED, _subject(r), payload=r)


def _outcome(r: PlannedRun) -> Event[PlannedRun]:
    """The event of a run that ended: ``finished`` (status ``ok``) or ``failed``."""
    return Event(Kind.FINISHED if r.status == "ok" else Kind.FAILED, _subject(r), duration=r.duration,
                 message=r.error or "", payload=r)


def _run_local(template: str, todo: list[PlannedRun], cwd: str | None, jobs: int, allow_unknown: bool,
               kernel_name: str | None, timeout: float | None) -> Iterator[Event[PlannedRun]]:
    if not todo:
        return
    secret_env = _secret_environment(todo)
    nb = _load(template)
    name = kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    jobs = kernels.usable_jobs(jobs)
    pending = collections.deque(todo)
    with contextlib.ExitStack() as stack:
        creds = stack.enter_context(kernels.credentials())
        env = kernels.kernel_environment(secret_env, creds)
        pool = stack.enter_context(kernels.KernelPool(name, size=jobs, total=len(todo), cwd=cwd, env=env))
        workers = stack.enter_context(kernels.worker_threads(jobs, "nbplugins-sweep"))
        active: dict[Future[PlannedRun], PlannedRun] = {}

        def submit() -> PlannedRun:
            r = pending.popleft()
            r.status = "running"
            active[workers.submit(_with_pool_kernel, pool, template, r, cwd, creds, allow_unknown, timeout)] = r
            return r

        try:
            while pending and len(active) < jobs:
                yield _started(submit())
            while active:
                completed, _ = wait(active, return_when=FIRST_COMPLETED)
                for fut in completed:
                    r = active.pop(fut)
                    fut.result()
                    yield _outcome(r)
                    if pending:
                        yield _started(submit())
        except BaseException:  # interrupted: end the runs in flight now, not when their cells finish
            pool.close()
            kernels.runtime.stop_all()
            raise


def _with_pool_kernel(pool: kernels.KernelPool, template: str, r: PlannedRun, cwd: str | None,
                      creds: Mapping[str, str], allow_unknown: bool, timeout: float | None) -> PlannedRun:
    try:
        km = pool.take()
    except NbpluginsError as exc:
        r.status, r.error, r.duration = "failed", str(exc), 0.0
        return r
    return _execute_one(template, r, cwd, km, creds, allow_unknown, timeout)


def _secret_environment(todo: list[PlannedRun]) -> dict[str, str]:
    """Resolve secret references once for the pool's kernels; they must agree across runs."""
    refs: dict[str, str] = {}
    for r in todo:
        for name, value in parameters.split(r.parameters)[1].items():
            if refs.setdefault(name, value) != value:
                raise ValidationError(f"parameter {name!r}: every run of a sweep must use the same secret reference")
    return {parameters.env_name(n): parameters.resolve_reference(f"parameter {n!r}", v) for n, v in refs.items()}


def _run_dask(template: str, todo: list[PlannedRun], cwd: str | None, scheduler: str | None, allow_unknown: bool,
              timeout: float | None) -> Iterator[Event[PlannedRun]]:
    if not todo:
        return
    if not scheduler:
        raise ValidationError("--executor dask needs --scheduler ADDRESS (for example tcp://127.0.0.1:8786)")
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise NbpluginsError("--executor dask needs the 'dask' extra: pip install 'nbplugins[dask]'") from None

    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise NbpluginsError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        futures = {}
        for r in todo:
            r.status = "running"
            futures[client.submit(_dask_run, template, r, cwd, allow_unknown, timeout, pure=False,
                                  key=f"nbplugins-run-{r.index}-{time.time_ns()}")] = r
            yield _started(r)
        for fut in as_completed(futures):
            original = futures[fut]
            try:
                result: PlannedRun = fut.result()
            except Exception as exc:
                original.status, original.error = "failed", secrets.redact(f"{type(exc).__name__}: {exc}")
                result = original
            original.__dict__.update(result.__dict__)
            yield _outcome(original)
    finally:
        client.close()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def save_state(report_dir: Path, runs: Iterable[PlannedRun], status: str = "finished") -> None:
    """Compact the outcomes into one file (atomically) and drop the journal they came from."""
    data = {"status": status,
            "runs": [_jsonable(asdict(r)) for r in runs if r.status in ("ok", "failed", "skipped")]}
    files.write_atomic(_state_path(report_dir), secrets.redact(json.dumps(data, indent=1)))
    (report_dir / JOURNAL).unlink(missing_ok=True)
