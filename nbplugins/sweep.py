"""Parameter sweeps: one template, many parameter sets, each in a fresh kernel.

Kernels come from a warm :class:`~nbplugins.papermill.kernels.KernelPool`, so start-up
overlaps execution; a failed run does not stop the others; finished runs are skipped on a
re-run unless forced. The same sweep runs on a Dask cluster with ``executor="dask"``.
:func:`run` yields :class:`Event` objects that the CLI's progress bar, the summary and the
tests consume alike; :func:`write_summary` writes CSV, Parquet and an HTML/PNG overview.

Notebooks record values for the summary with scrapbook: ``scrapbook.glue("rmse", 0.12)``.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import string
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nbplugins import scraps, secrets
from nbplugins.errors import NbpluginsError, ValidationError
from nbplugins.papermill import kernels, parameters
from nbplugins.papermill.engine import _load, execute

log = logging.getLogger(__name__)

STATE_FILE = "sweep.json"


# ----------------------------------------------------------------------------- inputs


def _scalar(node: yaml.Node, where: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise ValidationError(f"{where}: expected a single value, got a {node.id}")
    return yaml.safe_load(yaml.serialize(node))


def load_grid(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parameter sets from YAML: a mapping of name -> list (cartesian product; scalars are
    constants), or a list of mappings (explicit sets). Errors name the file, line and field."""
    path = Path(path)
    try:
        root = yaml.compose(path.read_text())
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise ValidationError(f"{path} line {line}: not valid YAML ({exc.problem})") from None
    if root is None:
        raise ValidationError(f"{path}: the grid is empty")
    if isinstance(root, yaml.MappingNode):
        names, choices = [], []
        for key, value in root.value:
            where = f"{path} line {key.start_mark.line + 1}, field {key.value!r}"
            if not isinstance(key, yaml.ScalarNode) or not key.value.isidentifier():
                raise ValidationError(f"{where}: a parameter name must be an identifier")
            if isinstance(value, yaml.SequenceNode):
                if not value.value:
                    raise ValidationError(f"{where}: the list of values is empty")
                options = [_scalar(item, f"{path} line {item.start_mark.line + 1}, field {key.value!r}")
                           for item in value.value]
            elif isinstance(value, yaml.ScalarNode):
                options = [_scalar(value, where)]
            else:
                raise ValidationError(f"{where}: expected a list of values or one value, got a mapping")
            names.append(key.value)
            choices.append(options)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]
    if isinstance(root, yaml.SequenceNode):
        sets = []
        for item in root.value:
            where = f"{path} line {item.start_mark.line + 1}"
            if not isinstance(item, yaml.MappingNode):
                raise ValidationError(f"{where}: each run must be a mapping of parameter names to values")
            sets.append({k.value: _scalar(v, f"{where}, field {k.value!r}") for k, v in item.value})
        return sets
    raise ValidationError(f"{path}: a grid is a mapping of names to lists, or a list of parameter sets")


_CONVERT = {"int": int, "float": float}


def _convert(text: str, declared: str | None, where: str) -> Any:
    """A CSV cell as the type the template declares, else int/float/bool/str by its look."""
    if declared in _CONVERT:
        try:
            return _CONVERT[declared](text)
        except ValueError:
            raise ValidationError(f"{where}: {text!r} is not {'an' if declared == 'int' else 'a'} {declared}") from None
    if declared == "bool" or text.lower() in ("true", "false"):
        if text.lower() in ("true", "false", "1", "0", "yes", "no"):
            return text.lower() in ("true", "1", "yes")
        raise ValidationError(f"{where}: {text!r} is not a bool")
    if declared == "str":
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_table(path: str | os.PathLike[str], declared: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Parameter sets from a CSV table with a header row; one run per row."""
    path = Path(path)
    declared = declared or {}
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ValidationError(f"{path}: the table is empty") from None
        except csv.Error as exc:
            raise ValidationError(f"{path} line 1: {exc}") from None
        for col, name in enumerate(header, 1):
            if not name.strip().isidentifier():
                raise ValidationError(f"{path} line 1, column {col}: {name!r} is not a parameter name")
        header = [h.strip() for h in header]
        rows = []
        try:
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise ValidationError(f"{path} line {line}: expected {len(header)} fields, got {len(row)}")
                rows.append({name: _convert(cell.strip(), declared.get(name), f"{path} line {line}, field {name!r}")
                             for name, cell in zip(header, row, strict=True)})
        except csv.Error as exc:
            raise ValidationError(f"{path} line {reader.line_num}: {exc}") from None
    if not rows:
        raise ValidationError(f"{path}: the table has a header but no runs")
    return rows


# ----------------------------------------------------------------------------- plan


@dataclass
class Run:
    """One run of a sweep and, once done, its outcome."""

    index: int
    parameters: dict[str, Any]
    output: str
    status: str = "pending"  # pending | running | ok | failed | skipped
    duration: float | None = None
    error: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Event:
    """Progress of a sweep: ``kind`` is started, ok, failed or skipped."""

    kind: str
    run: Run


def _fields(pattern: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(pattern) if name}


def plan(template: str, sets: list[dict[str, Any]], output_pattern: str, *,
         allow_unknown: bool = False) -> list[Run]:
    """Check the parameter sets against the template and map each to its output path.

    Refuses unknown parameters (listing the valid names) and two runs with one output path.
    """
    if not sets:
        raise ValidationError("the sweep has no parameter sets")
    nb = _load(template)
    if not parameters.has_parameters_cell(nb):
        log.warning("%s has no cell tagged 'parameters': values are injected at the top", template)
    names = sorted(set().union(*sets))
    parameters.check(nb, dict.fromkeys(names), source=template, allow_unknown=allow_unknown)
    missing = _fields(output_pattern) - set(names) - {"index"}
    if missing:
        raise ValidationError(f"output pattern {output_pattern!r}: {', '.join(sorted(missing))} is not a parameter "
                              f"(use {{index}} or one of: {', '.join(names)})")
    runs, seen = [], {}
    for i, params in enumerate(sets):
        try:
            output = output_pattern.format(index=i, **{k: _plain(v) for k, v in params.items()})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValidationError(f"output pattern {output_pattern!r} does not fit run {i}: {exc}") from None
        if "://" not in output:
            output = os.path.abspath(output)
        if output in seen:
            raise ValidationError(
                f"output pattern {output_pattern!r} maps runs {seen[output]} and {i} to {output}: "
                "add a parameter that differs, or {index}")
        seen[output] = i
        runs.append(Run(index=i, parameters=params, output=output))
    return runs


def _plain(value: Any) -> Any:
    return "secret" if parameters.is_reference(value) else value


# ----------------------------------------------------------------------------- state


def _state_path(report_dir: Path) -> Path:
    return report_dir / STATE_FILE


def load_state(report_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished runs of earlier invocations, by output path."""
    path = _state_path(report_dir)
    if not path.exists():
        return {}
    try:
        return {r["output"]: r for r in json.loads(path.read_text())["runs"]}
    except (ValueError, KeyError, TypeError):
        log.warning("%s is unreadable; running every run again", path)
        return {}


def _exists(url: str) -> bool:
    """Whether an earlier run's output is still there (through the storage layer's profiles)."""
    from nbplugins.storage import filesystem

    try:
        fs, path = filesystem(url)
        return bool(fs.exists(path))
    except Exception:  # unreachable storage: run it again rather than trust the record
        return False


# ----------------------------------------------------------------------------- run


def _execute_one(template: str, run: Run, cwd: str | None, km: Any, credentials: Mapping[str, str] | None,
                 allow_unknown: bool) -> Run:
    start = time.monotonic()
    try:
        if "://" not in run.output:
            Path(run.output).parent.mkdir(parents=True, exist_ok=True)
        nb = execute(template, run.output, run.parameters, cwd=cwd, km=km, credentials=credentials,
                     allow_unknown=allow_unknown)
        run.status, run.values = "ok", scraps.read(nb)
    except NbpluginsError as exc:
        run.status, run.error = "failed", str(exc)
    except Exception as exc:  # a run's failure is reported with the run, never stops the sweep
        run.status, run.error = "failed", secrets.redact(f"{type(exc).__name__}: {exc}")
    run.duration = time.monotonic() - start
    return run


def _dask_run(template: str, run: Run, cwd: str | None, allow_unknown: bool) -> Run:
    """Run on a Dask worker: the worker resolves its own credentials, nothing secret travels."""
    return _execute_one(template, run, cwd, None, None, allow_unknown)


def run(template: str | os.PathLike[str], runs: list[Run], *, jobs: int = 2, report_dir: str | os.PathLike[str],
        force: bool = False, executor: str = "local", scheduler: str | None = None,
        allow_unknown: bool = False, kernel_name: str | None = None) -> Iterator[Event]:
    """Execute the planned runs, yielding an event as each starts, finishes, fails or is skipped."""
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
            yield Event("skipped", r)
        else:
            todo.append(r)
    cwd = str(Path(template).resolve().parent) if "://" not in template else None
    finished: list[Run] = [r for r in runs if r.status == "skipped"]
    try:
        if executor == "dask":
            yield from _run_dask(template, todo, cwd, scheduler, allow_unknown, finished)
        elif executor == "local":
            yield from _run_local(template, todo, cwd, jobs, allow_unknown, kernel_name, finished)
        else:
            raise ValidationError(f"unknown executor {executor!r} (known: local, dask)")
    finally:
        save_state(report, runs)


def _run_local(template: str, todo: list[Run], cwd: str | None, jobs: int, allow_unknown: bool,
               kernel_name: str | None, finished: list[Run]) -> Iterator[Event]:
    if not todo:
        return
    secret_env = _secret_environment(todo)
    nb = _load(template)
    name = kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    with kernels.credentials() as creds:
        env = kernels.kernel_environment(secret_env, creds)
        with kernels.KernelPool(name, size=jobs, total=len(todo), cwd=cwd, env=env) as pool, \
                ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="nbplugins-sweep") as workers:
            queue = list(todo)
            active: dict[Future[Run], Run] = {}

            def submit() -> Run:
                r = queue.pop(0)
                r.status = "running"
                active[workers.submit(_with_pool_kernel, pool, template, r, cwd, creds, allow_unknown)] = r
                return r

            while queue and len(active) < jobs:
                yield Event("started", submit())
            while active:
                completed, _ = wait(active, return_when=FIRST_COMPLETED)
                for fut in completed:
                    r = active.pop(fut)
                    fut.result()
                    finished.append(r)
                    yield Event(r.status, r)
                    if queue:
                        yield Event("started", submit())


def _with_pool_kernel(pool: kernels.KernelPool, template: str, r: Run, cwd: str | None,
                      creds: Mapping[str, str], allow_unknown: bool) -> Run:
    try:
        km = pool.take()
    except NbpluginsError as exc:
        r.status, r.error, r.duration = "failed", str(exc), 0.0
        return r
    return _execute_one(template, r, cwd, km, creds, allow_unknown)


def _secret_environment(todo: list[Run]) -> dict[str, str]:
    """Resolve secret references once for the pool's kernels; they must agree across runs."""
    refs: dict[str, str] = {}
    for r in todo:
        for name, value in parameters.split(r.parameters)[1].items():
            if refs.setdefault(name, value) != value:
                raise ValidationError(f"parameter {name!r}: every run of a sweep must use the same secret reference")
    return {parameters.env_name(n): parameters.resolve_reference(f"parameter {n!r}", v) for n, v in refs.items()}


def _run_dask(template: str, todo: list[Run], cwd: str | None, scheduler: str | None, allow_unknown: bool,
              finished: list[Run]) -> Iterator[Event]:
    if not todo:
        return
    if not scheduler:
        raise ValidationError("--executor dask needs --scheduler ADDRESS (for example tcp://127.0.0.1:8786)")
    from distributed import Client, as_completed

    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise NbpluginsError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        futures = {}
        for r in todo:
            r.status = "running"
            futures[client.submit(_dask_run, template, r, cwd, allow_unknown, pure=False,
                                  key=f"nbplugins-run-{r.index}-{time.time_ns()}")] = r
            yield Event("started", r)
        for fut in as_completed(futures):
            original = futures[fut]
            try:
                result: Run = fut.result()
            except Exception as exc:
                original.status, original.error = "failed", secrets.redact(f"{type(exc).__name__}: {exc}")
                result = original
            original.__dict__.update(result.__dict__)
            finished.append(original)
            yield Event(original.status, original)
    finally:
        client.close()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def save_state(report_dir: Path, runs: Iterable[Run]) -> None:
    """Record outcomes (atomically) so a re-run can skip the finished runs."""
    path = _state_path(report_dir)
    data = {"runs": [_jsonable(asdict(r)) for r in runs if r.status in ("ok", "failed", "skipped")]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(secrets.redact(json.dumps(data, indent=1)))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- summary


def summary_frame(runs: Iterable[Run]) -> Any:
    """One row a run: parameters, status, duration, output, error, and glued values."""
    import pandas as pd

    rows = []
    for r in runs:
        row: dict[str, Any] = {"run": r.index, **{k: _plain(v) for k, v in r.parameters.items()},
                               "status": "ok" if r.status == "skipped" and not r.error else r.status,
                               "skipped": r.status == "skipped", "duration_s": r.duration,
                               "output": r.output, "error": r.error}
        row.update({f"value.{k}": v for k, v in r.values.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def write_summary(runs: list[Run], report_dir: str | os.PathLike[str], title: str) -> dict[str, Path]:
    """Write summary.csv, summary.parquet, overview.png and index.html; return their paths."""
    report = Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    frame = summary_frame(sorted(runs, key=lambda r: r.index))
    paths = {"csv": report / "summary.csv", "parquet": report / "summary.parquet",
             "png": report / "overview.png", "html": report / "index.html"}
    frame.to_csv(paths["csv"], index=False)
    for column in frame.columns:
        if frame[column].dtype == object and frame[column].map(type).nunique() > 1:
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    frame.to_parquet(paths["parquet"], index=False)
    _plot(frame, paths["png"], title)
    _html(frame, paths, title)
    return paths


def _plot(frame: Any, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"ok": "#2e7d32", "failed": "#c62828"}
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.22 * len(frame) + 1)))
    labels = [f"#{r.run}" for r in frame.itertuples()]
    durations = frame["duration_s"].fillna(0).tolist()
    bar_colors = ["#9e9e9e" if s else colors.get(st, "#616161") for s, st in zip(frame["skipped"], frame["status"], strict=True)]
    ax.barh(labels, durations, color=bar_colors)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ok = int((frame["status"] == "ok").sum())
    ax.set_title(f"{title}: {ok} ok, {int((frame['status'] == 'failed').sum())} failed, "
                 f"{int(frame['skipped'].sum())} skipped of {len(frame)}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _html(frame: Any, paths: dict[str, Path], title: str) -> None:
    import base64
    import html

    image = base64.b64encode(paths["png"].read_bytes()).decode()
    shown = frame.astype(object).where(frame.notna(), "")
    table = shown.to_html(index=False, classes="runs", escape=True)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table.runs{{border-collapse:collapse;font-size:13px}}
table.runs td,table.runs th{{border:1px solid #ccc;padding:3px 6px}}</style></head><body>
<h1>{html.escape(title)}</h1><img alt="durations and statuses" src="data:image/png;base64,{image}">
<p><a href="summary.csv">summary.csv</a> · <a href="summary.parquet">summary.parquet</a></p>{table}</body></html>"""
    paths["html"].write_text(secrets.redact(page))
