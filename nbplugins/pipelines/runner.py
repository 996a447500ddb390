"""Run an Elyra pipeline locally: independent nodes in parallel, a run record, resume after failures.

Where Elyra's local runtime runs nodes one at a time and executes each notebook in place
(overwriting it), this runner:

* runs every node whose parents have succeeded, up to ``jobs`` at once;
* never touches the pipeline's files: each node runs in its own folder
  ``<run_dir>/nodes/<folder>/``, holding the executed notebook (or the script and its log);
  the folder name is derived from the node's label (:func:`nbplugins.paths.folder_names`),
  which is a display name and never a path; a new run goes only into a new or empty folder;
* stages into that folder what the node would see on Kubeflow Pipelines or Airflow: its
  ``dependencies`` (paths relative to its file, globs allowed, never absolute or climbing
  with ``..``, as ``validate`` checks) and the declared ``outputs``
  of every node it depends on, directly or not. Files flow between nodes only when declared
  as outputs, exactly as after an export; Elyra's local runtime, which runs all notebooks of
  a folder in that folder, hides a missing declaration until the pipeline runs on a cluster.
  Absolute paths, ``s3://`` and ``onedata://`` URLs in parameters work unchanged;
* gives each notebook its papermill parameters and pipeline parameters (``--param``, which
  Elyra supports on Kubeflow only), and each node its environment (pipeline parameters it
  uses are also set as environment variables, as Elyra does on Kubeflow); env values such
  as ``@env:NAME`` or ``@oidc`` are resolved here and scrubbed from every output;
* on a failure lets independent branches finish and skips only the dependents;
* records every node's status, times, outputs and error in ``run.json`` after each event,
  so ``resume=True`` re-runs only the nodes that failed or were skipped.

:meth:`PipelineRun.events` is a generator of :class:`nbplugins.events.Event` (run-started,
started, finished, failed, skipped, reused, run-finished) that the CLI's progress bar, the
editor and the tests consume alike; :func:`run_pipeline` runs one to its end without output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from nbplugins import files, paths, references, secrets
from nbplugins.errors import ExecutionError, NbpluginsError, ValidationError
from nbplugins.events import Event, Kind
from nbplugins.papermill import kernels
from nbplugins.pipelines import elyra, folders, graph
from nbplugins.pipelines.model import Node, Pipeline
from nbplugins.pipelines.parameters import node_parameters, resolve_parameters

RECORD = "run.json"
DONE = ("succeeded", "reused")


#: What a node event carries: the node's declared outputs (path relative to the run folder, bytes).
Outputs = list[dict[str, Any]]

#: Longest a free slot is held for a node on a longer chain whose parents are still running.
HOLD_SECONDS = 0.75


def critical_path_order(pipeline: Pipeline) -> list[Node]:
    """Nodes by the length of the longest chain they start (then file order).

    Starting the node with the most work behind it first (list scheduling by "level")
    keeps the critical path moving: in a diamond plus independent nodes, the diamond's
    branches run side by side instead of behind an independent node.
    """
    height = graph.heights(pipeline.parents())
    return sorted(pipeline.order(), key=lambda n: -height[n.id])


class PipelineRun:
    """One run of a pipeline in a run folder; iterate :meth:`events` to execute it."""

    def __init__(self, pipeline: Pipeline, run_dir: str | os.PathLike[str] | None = None, *,
                 parameters: Mapping[str, Any] | None = None, jobs: int = 2, resume: bool = False,
                 kernel_name: str | None = None, warm: bool = True, timeout: float | None = None) -> None:
        elyra.validate(pipeline)
        from nbplugins.papermill import kernels  # once here, not a failed kernel start per node

        kernels.require_notebook_kernels([pipeline.path_of(n) for n in pipeline.nodes if n.kind == "notebook"], kernel_name)
        self.pipeline = pipeline
        self.jobs = max(1, int(jobs))
        self.kernel_name = kernel_name
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(run_dir or Path("runs") / f"{pipeline.name}-{stamp}").resolve()
        self.record_path = self.run_dir / RECORD
        self.name = f"{pipeline.name}-{stamp}"
        previous = self._previous(resume)
        recorded = {label: rec.get("folder") for label, rec in previous["nodes"].items()} if previous else None
        self.folders = pipeline.folders(recorded)  # node label -> folder under nodes/; a resumed run keeps its own
        if previous is not None and not parameters:
            parameters = previous.get("parameters") or {}
        self.values = resolve_parameters(pipeline, parameters)
        if previous is not None and previous.get("parameters", {}) != self.values:
            raise ValidationError(
                f"{self.run_dir}: --resume with different parameters ({self._diff(previous['parameters'])}) "
                "would mix results of two configurations; start a new run folder instead")
        self.record = self._new_record(previous)
        self._lock = threading.Lock()
        self.warm = warm
        self.timeout = timeout  # seconds per node; a node's own ``timeout`` wins
        self._scripts: set[subprocess.Popen[str]] = set()
        self._warm_kernels: kernels.WarmKernels | None = None
        self._credentials: dict[str, str] | None = None

    # -- record ----------------------------------------------------------------------------

    def _fingerprint(self) -> str:
        text = json.dumps(elyra.to_dict(self.pipeline), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _diff(self, old: Mapping[str, Any]) -> str:
        keys = sorted(k for k in set(old) | set(self.values) if old.get(k) != self.values.get(k))
        return ", ".join(f"{k}: {old.get(k)!r} -> {self.values.get(k)!r}" for k in keys)

    def _previous(self, resume: bool) -> dict[str, Any] | None:
        """The record to resume, or None for a new run; refuses a folder that holds anything else.

        A run empties and writes folders and files in ``run_dir``: a new run goes only into a
        new or empty folder, and ``resume`` only into a run folder of this very pipeline.
        """
        exists = self.record_path.exists()
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValidationError(f"{self.run_dir} is a file; choose another --run-dir")
        if not resume:
            if exists:
                raise ValidationError(f"{self.run_dir} already holds a run; pass --resume to continue it "
                                      "or choose another --run-dir")
            if self.run_dir.exists() and any(self.run_dir.iterdir()):
                raise ValidationError(f"{self.run_dir} is not empty and is not a run folder (no {RECORD}); "
                                      "choose a new --run-dir (nothing in it was changed)")
            return None
        if not exists:
            raise ValidationError(f"{self.run_dir}: no {RECORD} to resume from; --resume continues a run folder "
                                  "of this pipeline, or choose a new --run-dir")
        try:
            previous = json.loads(self.record_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValidationError(f"{self.record_path}: unreadable run record ({exc})") from None
        if not isinstance(previous, dict) or not isinstance(previous.get("nodes"), dict) \
                or not all(isinstance(rec, dict) for rec in previous["nodes"].values()):
            raise ValidationError(f"{self.record_path}: not a run record of nbplugins; choose a new --run-dir")
        if previous.get("pipeline") != self.pipeline.name:
            raise ValidationError(f"{self.record_path}: a run of pipeline {previous.get('pipeline')!r}, not of "
                                  f"{self.pipeline.name!r}; resume needs a run folder of the same pipeline")
        labels = {n.label for n in self.pipeline.nodes}
        if set(previous["nodes"]) != labels:
            raise ValidationError(f"{self.record_path}: the run recorded other nodes than {self.pipeline.where} has; "
                                  "resume needs the same pipeline")
        self.name = previous.get("run_name", self.name)
        return previous

    def _new_record(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        p = self.pipeline
        labels = {n.id: n.label for n in p.nodes}
        nodes = {}
        for node in p.nodes:
            old = (previous or {}).get("nodes", {}).get(node.label, {})
            keep = old.get("status") in DONE
            nodes[node.label] = {
                "id": node.id, "file": node.filename, "kind": node.kind, "folder": self.folders[node.label],
                "depends_on": [labels[d] for d in node.depends_on],
                "status": "reused" if keep else "pending",
                "start": old.get("start") if keep else None, "end": old.get("end") if keep else None,
                "duration": old.get("duration") if keep else None,
                "outputs": old.get("outputs", []) if keep else [],
                "error": None, "output_notebook": old.get("output_notebook") if keep else None,
                "log": old.get("log") if keep else None,
            }
        return {
            "pipeline": p.name, "source": p.source, "fingerprint": self._fingerprint(),
            "run_name": self.name, "run_dir": str(self.run_dir),
            "attempt": (previous or {}).get("attempt", 0) + 1,
            "parameters": self.values, "jobs": self.jobs, "status": "running",
            "start": time.time(), "end": None, "nodes": nodes,
            "history": (previous or {}).get("history", []) + ([{
                "attempt": previous.get("attempt", 1), "status": previous.get("status"),
                "start": previous.get("start"), "end": previous.get("end"),
            }] if previous else []),
        }

    def save(self) -> None:
        """Write the run record atomically (it is readable while the run goes on)."""
        with self._lock:
            text = json.dumps(self.record, indent=2, default=str)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        files.write_atomic(self.record_path, secrets.redact(text), mode=None)

    # -- one node --------------------------------------------------------------------------

    def node_dir(self, node: Node) -> Path:
        """The node's folder: ``nodes/<name>`` with a safe name derived from its label (never the label)."""
        return self.run_dir / "nodes" / self.folders[node.label]

    def _stage(self, node: Node, workdir: Path) -> None:
        """Put the node's dependencies and every ancestor's declared outputs into its folder.

        Every copy is planned and checked (its source inside its folder, links followed) before
        the folder is emptied; every destination stays inside the folder.
        """
        copies: list[tuple[Path, Path, str]] = []  # (source, path relative to workdir, what)
        source_dir = self.pipeline.path_of(node).parent
        for dep in node.dependencies:
            found = folders.matches(source_dir, dep, recursive=node.include_subdirectories)
            if not found:
                raise ExecutionError(f"node {node.label!r}: dependency {dep!r} not found in {source_dir}")
            for path in found:
                if path.is_dir() and not node.include_subdirectories and any(c in dep for c in "*?["):
                    continue
                copies.append((path, path.relative_to(source_dir), f"node {node.label!r}: dependencies entry"))
        ids = self.pipeline.by_id()
        for ancestor in self.pipeline.ancestors(node.id):
            parent = ids[ancestor]
            parent_dir = self.node_dir(parent)
            what = f"node {parent.label!r}: outputs entry"
            for pattern in parent.outputs:
                for path in folders.matches(parent_dir, pattern):
                    rel = path.relative_to(parent_dir)
                    copies.append((paths.inside(parent_dir, rel, what), rel, what))
        workdir.mkdir(parents=True, exist_ok=True)
        for old in workdir.iterdir():  # empty it, but keep the folder: a warm kernel may sit in it
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        for source, rel, what in copies:
            folders.copy(source, paths.inside(workdir, rel, what))

    def _env(self, node: Node) -> dict[str, str]:
        env = {name: str(value) for name, value in self.values.items() if name in node.pipeline_parameters}
        for name, value in self.pipeline.env_of(node).items():
            env[name] = (references.resolve_reference(f"{node.label} env {name}", value)
                         if references.is_reference(value) else value)
        env["ELYRA_RUNTIME_ENV"] = "local"
        env["ELYRA_RUN_NAME"] = self.name
        return env

    def _kernel_of(self, nb: Any) -> str:
        return self.kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"

    # -- warm kernels: start the next nodes' kernels while their parents run -----------------

    def _warm(self, node: Node) -> None:
        # a secret parameter reference adds kernel env at execution time: such a node starts cold
        if (self._warm_kernels is None or node.id in self._warm_kernels or node.kind != "notebook"
                or any(references.is_reference(v) for v in node.parameters.values())):
            return
        import nbformat

        workdir = self.node_dir(node)
        workdir.mkdir(parents=True, exist_ok=True)
        nb = nbformat.read(str(self.pipeline.path_of(node)), as_version=4)
        env = kernels.kernel_environment(self._env(node), self._credentials or {})
        self._warm_kernels.start(node.id, self._kernel_of(nb), cwd=str(workdir), env=env)

    def _collect_outputs(self, node: Node, workdir: Path) -> list[dict[str, Any]]:
        outputs = []
        for pattern in node.outputs:
            found = folders.matches(workdir, pattern)
            if not found:
                raise ExecutionError(f"node {node.label!r}: declared output {pattern!r} was not produced")
            for path in found:  # an output that is a link out of the folder is not the node's to hand on
                path = paths.inside(workdir, path.relative_to(workdir), f"node {node.label!r}: outputs entry")
                root = workdir.resolve()
                files = sorted(p for p in path.rglob("*") if p.is_file() and p.resolve().is_relative_to(root)) \
                    if path.is_dir() else [path]
                outputs += [{"path": f.relative_to(self.run_dir).as_posix(), "bytes": f.stat().st_size} for f in files]
        return outputs

    def _execute(self, node: Node) -> dict[str, Any]:
        """Stage, run and check one node; returns the record fields to update."""
        workdir = self.node_dir(node)
        self._stage(node, workdir)
        source = self.pipeline.path_of(node)
        env = self._env(node)
        result: dict[str, Any] = {}
        if node.kind == "notebook":
            import nbformat

            from nbplugins.papermill.engine import execute

            nb = nbformat.read(str(source), as_version=4)
            params = node_parameters(self.pipeline, node, self.values, elyra.declared(source) or {})
            target = workdir / source.name
            result["output_notebook"] = str(target.relative_to(self.run_dir))
            kernel = self._kernel_of(nb)
            km = self._warm_kernels.take(node.id) if self._warm_kernels is not None else None
            execute(str(source), str(target), params, cwd=str(workdir), env=env, kernel_name=kernel,
                    km=km, credentials=self._credentials if km is not None else None,
                    timeout=node.timeout or self.timeout)
        else:
            target = workdir / source.name
            shutil.copy2(source, target)
            argv = [sys.executable, target.name] if node.kind == "python" else ["Rscript", target.name]
            log = workdir / f"{source.stem}.log"
            result["log"] = str(log.relative_to(self.run_dir))
            proc = self._script(node, argv, workdir, env)
            files.write_atomic(log, secrets.redact(proc.stdout + proc.stderr))
            if proc.returncode != 0:
                last = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit {proc.returncode}"]
                raise ExecutionError(f"{source.name} exited with {proc.returncode}: {secrets.redact(last[0])[:300]}")
        result["outputs"] = self._collect_outputs(node, workdir)
        return result

    def _script(self, node: Node, argv: list[str], workdir: Path, env: Mapping[str, str]
                ) -> subprocess.CompletedProcess[str]:
        """Run a script node, stopped at its timeout or when the run is interrupted."""
        try:
            proc = subprocess.Popen(argv, cwd=workdir, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except FileNotFoundError:
            raise ExecutionError(f"node {node.label!r}: {argv[0]} is not installed") from None
        self._scripts.add(proc)
        timeout = node.timeout or self.timeout
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise ExecutionError(f"node {node.label!r}: stopped after its {timeout:g} s timeout") from None
        finally:
            self._scripts.discard(proc)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _stop_everything(self) -> None:
        """An interrupted run: end every kernel and script now, so the workers return."""
        for proc in list(self._scripts):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        kernels.runtime.stop_all()

    def _worker(self, node: Node, events: queue.Queue[tuple[Node, Event[Outputs], dict[str, Any]]]) -> None:
        start = time.time()
        events.put((node, Event(Kind.STARTED, node.label, start), {"status": "running", "start": start}))
        try:
            fields = self._execute(node)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a node event
            end = time.time()
            message = str(exc) if isinstance(exc, NbpluginsError) else f"{type(exc).__name__}: {exc}"
            message = secrets.redact(message.strip().splitlines()[0] if message.strip() else type(exc).__name__)
            events.put((node, Event(Kind.FAILED, node.label, end, end - start, message=message),
                        {"status": "failed", "end": end, "duration": end - start, "error": message}))
            return
        end = time.time()
        events.put((node, Event(Kind.FINISHED, node.label, end, end - start, payload=fields["outputs"]),
                    {**fields, "status": "succeeded", "end": end, "duration": end - start}))

    # -- the run ---------------------------------------------------------------------------

    def _setup_warm(self, stack: contextlib.ExitStack) -> None:
        """One token keeper for the whole run, and kernels started ahead of need."""
        self._credentials = stack.enter_context(kernels.credentials())
        if self.warm:
            self._warm_kernels = kernels.WarmKernels(self.jobs)
            stack.callback(self._warm_kernels.close)

    def _update(self, label: str, fields: Mapping[str, Any]) -> None:
        with self._lock:
            self.record["nodes"][label].update(fields)

    def events(self) -> Iterator[Event[Outputs]]:
        """Execute the pipeline, yielding an event for each change; the record follows every event."""
        p = self.pipeline
        ids = p.by_id()
        status = {n.id: self.record["nodes"][n.label]["status"] for n in p.nodes}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.save()
        yield Event(Kind.RUN_STARTED, message=f"{len(p.nodes)} nodes, {self.jobs} at a time, in {self.run_dir}")
        for node in p.order():
            if status[node.id] == "reused":
                rec = self.record["nodes"][node.label]
                yield Event(Kind.REUSED, node.label, duration=rec.get("duration"), payload=rec.get("outputs", []))
        ranked = critical_path_order(p)
        height = graph.heights(p.parents())
        hold_until: float | None = None  # a slot kept free briefly for a longer chain (HOLD_SECONDS)
        hold_spent = False  # the hold ran out: no new hold until the next event
        inbox: queue.Queue[tuple[Node, Event[Outputs], dict[str, Any]]] = queue.Queue()
        running: set[str] = set()
        stack = contextlib.ExitStack()
        try:
            self._setup_warm(stack)
            pool = stack.enter_context(kernels.worker_threads(self.jobs, "nbplugins-node"))
            while True:
                # nodes whose parents are all done or running: about to be ready
                soon = [n for n in ranked if status[n.id] == "pending"
                        and any(status[d] == "running" for d in n.depends_on)
                        and all(status[d] in (*DONE, "running") for d in n.depends_on)]
                for node in ranked:  # launch ready nodes, longest remaining chain first
                    if len(running) >= self.jobs:
                        break
                    if status[node.id] == "pending" and all(status[d] in DONE for d in node.depends_on):
                        if soon and height[soon[0].id] > height[node.id] and not hold_spent:
                            # a longer chain is about to be ready: keep this slot for it, briefly
                            hold_until = hold_until or time.monotonic() + HOLD_SECONDS
                            if time.monotonic() < hold_until:
                                break
                            hold_spent = True
                        self._warm(node)  # its kernel boots while the worker imports the engine
                        status[node.id] = "running"
                        running.add(node.id)
                        pool.submit(self._worker, node, inbox)
                # the next nodes in line (parents running or done) get their kernels started now
                upcoming = [n for n in ranked if status[n.id] == "pending"
                            and all(status[d] in (*DONE, "running") for d in n.depends_on)]
                for node in upcoming[:self.jobs]:
                    self._warm(node)
                if not running:
                    break
                try:
                    holding = hold_until is not None and not hold_spent
                    wait = max(0.0, hold_until - time.monotonic()) if holding else None
                    node, event, fields = inbox.get(timeout=wait)
                except queue.Empty:  # the hold ran out: the shorter chain gets the slot
                    continue
                hold_until, hold_spent = None, False
                self._update(node.label, fields)
                if event.kind != Kind.STARTED:
                    running.discard(node.id)
                    status[node.id] = fields["status"]
                self.save()
                yield event
                if event.kind == Kind.FAILED:
                    if self._warm_kernels is not None:
                        self._warm_kernels.drop(p.descendants(node.id))
                    for nid in sorted(p.descendants(node.id), key=[n.id for n in p.order()].index):
                        if status[nid] == "pending":
                            status[nid] = "skipped"
                            why = f"because {node.label!r} failed"
                            self._update(ids[nid].label, {"status": "skipped", "error": why})
                            self.save()
                            yield Event(Kind.SKIPPED, ids[nid].label, message=why)
        except BaseException:
            self.record["status"] = "interrupted"
            self._stop_everything()
            raise
        finally:
            stack.close()  # the node threads end first, then the warm kernels and the token keeper
            self.record["end"] = time.time()
            if self.record["status"] != "interrupted":
                bad = [s for s in status.values() if s not in DONE]
                self.record["status"] = "failed" if bad else "succeeded"
            self.save()
            with contextlib.suppress(Exception):
                from nbplugins.pipelines import report

                report.write(self.record, self.run_dir / "report.html", p)
        yield Event(Kind.RUN_FINISHED, message=self.summary())

    # -- results ---------------------------------------------------------------------------

    def by_status(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for label, rec in self.record["nodes"].items():
            out.setdefault(rec["status"], []).append(label)
        return out

    def summary(self) -> str:
        """One line: counts per status, and which nodes failed and were skipped."""
        groups = self.by_status()
        parts = [f"{len(groups[s])} {s}" for s in ("succeeded", "reused", "failed", "skipped", "pending") if s in groups]
        line = f"{self.pipeline.name}: " + ", ".join(parts)
        if groups.get("failed"):
            line += f"; failed: {', '.join(groups['failed'])}"
        if groups.get("skipped"):
            line += f"; skipped: {', '.join(groups['skipped'])}"
        return line

    def raise_for_status(self) -> None:
        """ExecutionError naming the failed nodes (and how to resume) unless every node succeeded."""
        groups = self.by_status()
        failed = groups.get("failed", [])
        if self.record["status"] == "succeeded":
            return
        first = self.record["nodes"][failed[0]]["error"] if failed else "interrupted"
        raise ExecutionError(
            f"{self.summary()} ({failed[0] if failed else 'run'}: {first}); "
            f"re-run the failed and skipped nodes with --resume --run-dir {self.run_dir}")


def run_pipeline(pipeline: Pipeline | str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None,
                 **kwargs: Any) -> PipelineRun:
    """Run a pipeline to the end (no progress output); returns the finished :class:`PipelineRun`."""
    if not isinstance(pipeline, Pipeline):
        pipeline = elyra.load(pipeline)
    job = PipelineRun(pipeline, run_dir, **kwargs)
    for _ in job.events():
        pass
    return job


def with_progress(job: PipelineRun, *, echo: Any = None, disable: bool | None = None) -> Iterator[Event[Outputs]]:
    """Yield ``job``'s events while a tqdm bar counts finished nodes; ``echo`` prints each line."""
    from tqdm.auto import tqdm

    total = len(job.pipeline.nodes)
    with tqdm(total=total, unit="node", desc=job.pipeline.name, disable=disable, leave=True) as bar:
        for event in job.events():
            if event.kind in (Kind.FINISHED, Kind.FAILED, Kind.SKIPPED, Kind.REUSED):
                bar.update(1)
            if echo is not None and event.kind not in (Kind.RUN_STARTED, Kind.RUN_FINISHED):
                bar.write(event.line()) if not bar.disable else echo(event.line())
            yield event
