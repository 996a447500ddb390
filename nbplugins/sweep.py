"""Parameter sweeps: one template, many parameter sets, each in a fresh kernel.

Kernels come from a warm :class:`~nbplugins.papermill.kernels.KernelPool`, so start-up
overlaps execution; a failed run does not stop the others; finished runs are skipped on a
re-run unless forced. The same sweep runs on a Dask cluster with ``executor="dask"``.
:func:`run` yields :class:`Event` objects that the CLI's progress bar, the summary and the
tests consume alike; :func:`write_summary` writes CSV, Parquet and an HTML report: glued
numbers plotted against the swept parameters, and each run's notebook rendered as HTML.

Notebooks record values for the summary with scrapbook: ``scrapbook.glue("rmse", 0.12)``.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import html
import io
import itertools
import json
import logging
import math
import os
import re
import string
import time
import urllib.parse
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nbplugins import paths, scraps, secrets
from nbplugins.errors import NbpluginsError, ValidationError
from nbplugins.papermill import kernels, parameters
from nbplugins.papermill.engine import _load, execute

log = logging.getLogger(__name__)

STATE_FILE = "sweep.json"
JOURNAL = "runs.jsonl"


# ----------------------------------------------------------------------------- inputs


def _scalar(node: yaml.Node, where: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise ValidationError(f"{where}: expected a single value, got a {node.id}")
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:  # a tag safe_load refuses (!!python/object ...)
        raise ValidationError(f"{where}: {getattr(exc, 'problem', None) or exc}") from None


def _read_text(path: Path, kind: str) -> str:
    """A grid or table file's text; one line naming the file if it is unreadable or not text."""
    try:
        return path.read_bytes().decode()
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path}: not a text file (byte {exc.start} is not UTF-8); {kind}") from None


#: Python types a value may have for a declared parameter type (an int is a fine float).
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _typed(value: Any, declared: str | None, where: str) -> Any:
    """A grid value checked against the type the template declares, as table cells are.

    ``null`` and secret references pass; an int where a float is declared becomes a float.
    """
    kinds = _TYPES.get(declared or "")
    if kinds is None or value is None or parameters.is_reference(value):
        return value
    if not isinstance(value, kinds) or (isinstance(value, bool) and declared != "bool"):
        kind = type(value).__name__
        hint = (f" (quote it to pass the text: '{value}')" if declared == "str"
                else " (remove the quotes to pass a number or true/false)" if isinstance(value, str) else "")
        raise ValidationError(f"{where}: {value!r} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                              f"but the template declares {declared}{hint}")
    return float(value) if declared == "float" else value


def _name(key: yaml.Node, where: str, seen: dict[str, int]) -> str:
    """A parameter name from a YAML key: an identifier, given once."""
    if not isinstance(key, yaml.ScalarNode) or not str(key.value).isidentifier():
        raise ValidationError(f"{where}: a parameter name must be an identifier")
    line = key.start_mark.line + 1
    if key.value in seen:
        raise ValidationError(f"{where}: {key.value!r} is given twice (lines {seen[key.value]} and {line}); "
                              "give each parameter once")
    seen[key.value] = line
    return key.value


#: Most runs a grid may make unless the caller raises it (a typo can ask for a million).
MAX_RUNS = 10_000


def load_grid(path: str | os.PathLike[str], declared: Mapping[str, str] | None = None,
              max_runs: int | None = MAX_RUNS) -> list[dict[str, Any]]:
    """Parameter sets from YAML: a mapping of name -> list (cartesian product; scalars are
    constants), or a list of mappings (explicit sets). Errors name the file, line and field.

    ``declared`` (name -> type, from :func:`~nbplugins.papermill.parameters.declared`) refuses
    values of another type, as :func:`load_table` does; a name given twice is refused too.
    """
    path = Path(path)
    declared = declared or {}
    text = _read_text(path, "a grid is YAML text")
    try:
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise ValidationError(f"{path} line {line}: not valid YAML ({exc.problem})") from None
    except yaml.YAMLError as exc:  # a control character, for instance
        raise ValidationError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if root is None:
        raise ValidationError(f"{path}: the grid is empty")
    if isinstance(root, yaml.MappingNode):
        names, choices, seen = [], [], {}
        for key, value in root.value:
            where = f"{path} line {key.start_mark.line + 1}, field {key.value!r}"
            name = _name(key, where, seen)
            if isinstance(value, yaml.SequenceNode):
                if not value.value:
                    raise ValidationError(f"{where}: the list of values is empty")
                options = [_typed(_scalar(item, at := f"{path} line {item.start_mark.line + 1}, field {name!r}"),
                                  declared.get(name), at) for item in value.value]
            elif isinstance(value, yaml.ScalarNode):
                options = [_typed(_scalar(value, where), declared.get(name), where)]
            else:
                raise ValidationError(f"{where}: expected a list of values or one value, got a mapping")
            names.append(name)
            choices.append(options)
        count = math.prod(len(options) for options in choices)
        if max_runs is not None and count > max_runs:
            raise ValidationError(
                f"{path}: the grid makes {count:,} runs ({' x '.join(str(len(o)) for o in choices)}), "
                f"more than the ceiling of {max_runs:,}; raise it with --max-runs {count} if you mean it")
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]
    if isinstance(root, yaml.SequenceNode):
        sets = []
        for item in root.value:
            where = f"{path} line {item.start_mark.line + 1}"
            if not isinstance(item, yaml.MappingNode):
                raise ValidationError(f"{where}: each run must be a mapping of parameter names to values")
            seen: dict[str, int] = {}
            one = {}
            for k, v in item.value:
                name = _name(k, f"{path} line {k.start_mark.line + 1}, field {k.value!r}", seen)
                at = f"{where}, field {name!r}"
                one[name] = _typed(_scalar(v, at), declared.get(name), at)
            sets.append(one)
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
    if declared == "str":  # "true" stays text where the template declares a str
        return text
    if declared == "bool" or text.lower() in ("true", "false"):
        if text.lower() in ("true", "false", "1", "0", "yes", "no"):
            return text.lower() in ("true", "1", "yes")
        raise ValidationError(f"{where}: {text!r} is not a bool")
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
    with io.StringIO(_read_text(path, "a table is CSV text"), newline="") as handle:
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
        for col, name in enumerate(header, 1):
            if header.index(name) + 1 != col:
                raise ValidationError(f"{path} line 1: column {name!r} is given twice (columns "
                                      f"{header.index(name) + 1} and {col}); give each parameter once")
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
    try:
        return {name for _, name, _, _ in string.Formatter().parse(pattern) if name}
    except ValueError as exc:  # an unbalanced { or }
        raise ValidationError(f"output pattern {pattern!r}: {exc} (fields are {{name}}; "
                              "write {{ or }} for a literal brace)") from None


def plan(template: str, sets: list[dict[str, Any]], output_pattern: str, *,
         allow_unknown: bool = False) -> list[Run]:
    """Check the parameter sets against the template and map each to its output path.

    Refuses unknown parameters (listing the valid names) and two runs with one output path.
    Values come from grids and tables: each one filled into the pattern must be one path
    segment (:func:`nbplugins.paths.safe_component`), and a local output must stay inside the
    folder of the pattern's fixed beginning (``out/`` for ``out/{a}/{b}.ipynb``).
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
    formatter = string.Formatter()
    pieces = [(name, spec, conv) for _, name, spec, conv in formatter.parse(output_pattern) if name is not None]
    fixed = next(iter(formatter.parse(output_pattern)), ("",))[0] if pieces else output_pattern
    root = None if "://" in output_pattern else os.path.abspath(os.path.dirname(fixed) or ".")
    runs, seen = [], {}
    for i, params in enumerate(sets):
        values = {**{k: _plain(v) for k, v in params.items()}, "index": i}
        try:
            output = output_pattern.format(**values)
            for name, spec, conv in pieces:  # each filled-in value must stay one path segment
                text = formatter.format_field(formatter.convert_field(formatter.get_field(name, (), values)[0], conv),
                                              spec or "")
                paths.safe_component(text, f"run {i}: parameter {name!r} value")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValidationError(f"output pattern {output_pattern!r} does not fit run {i}: {exc}") from None
        except ValidationError as exc:
            raise ValidationError(f"output pattern {output_pattern!r}: {exc}; nothing was run") from None
        if root is not None:
            output = os.path.abspath(output)
            used = ", ".join(f"{name}={values[name]!r}" for name in dict.fromkeys(n for n, _, _ in pieces))
            try:
                paths.inside(root, os.path.relpath(output, root), "output")
            except ValidationError:
                raise ValidationError(f"output pattern {output_pattern!r}: run {i} ({used}) would write {output}, "
                                      f"outside {root}; nothing was run") from None
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

    def append(self, run: Run) -> None:
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


# ----------------------------------------------------------------------------- run


def _execute_one(template: str, run: Run, cwd: str | None, km: Any, credentials: Mapping[str, str] | None,
                 allow_unknown: bool, timeout: float | None = None) -> Run:
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


def _dask_run(template: str, run: Run, cwd: str | None, allow_unknown: bool, timeout: float | None) -> Run:
    """Run on a Dask worker: the worker resolves its own credentials, nothing secret travels."""
    return _execute_one(template, run, cwd, None, None, allow_unknown, timeout)


def run(template: str | os.PathLike[str], runs: list[Run], *, jobs: int = 2, report_dir: str | os.PathLike[str],
        force: bool = False, executor: str = "local", scheduler: str | None = None,
        allow_unknown: bool = False, kernel_name: str | None = None,
        timeout: float | None = None) -> Iterator[Event]:
    """Execute the planned runs, yielding an event as each starts, finishes, fails or is skipped.

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
            yield Event("skipped", r)
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
            if event.kind in ("ok", "failed"):
                journal.append(event.run)
            yield event
        status = "finished"
    finally:
        journal.close()
        save_state(report, runs, status)


def _run_local(template: str, todo: list[Run], cwd: str | None, jobs: int, allow_unknown: bool,
               kernel_name: str | None, timeout: float | None) -> Iterator[Event]:
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
        workers = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="nbplugins-sweep")
        stack.callback(workers.shutdown, wait=True, cancel_futures=True)
        active: dict[Future[Run], Run] = {}

        def submit() -> Run:
            r = pending.popleft()
            r.status = "running"
            active[workers.submit(_with_pool_kernel, pool, template, r, cwd, creds, allow_unknown, timeout)] = r
            return r

        try:
            while pending and len(active) < jobs:
                yield Event("started", submit())
            while active:
                completed, _ = wait(active, return_when=FIRST_COMPLETED)
                for fut in completed:
                    r = active.pop(fut)
                    fut.result()
                    yield Event(r.status, r)
                    if pending:
                        yield Event("started", submit())
        except BaseException:  # interrupted: end the runs in flight now, not when their cells finish
            pool.close()
            kernels.runtime.stop_all()
            raise


def _with_pool_kernel(pool: kernels.KernelPool, template: str, r: Run, cwd: str | None,
                      creds: Mapping[str, str], allow_unknown: bool, timeout: float | None) -> Run:
    try:
        km = pool.take()
    except NbpluginsError as exc:
        r.status, r.error, r.duration = "failed", str(exc), 0.0
        return r
    return _execute_one(template, r, cwd, km, creds, allow_unknown, timeout)


def _secret_environment(todo: list[Run]) -> dict[str, str]:
    """Resolve secret references once for the pool's kernels; they must agree across runs."""
    refs: dict[str, str] = {}
    for r in todo:
        for name, value in parameters.split(r.parameters)[1].items():
            if refs.setdefault(name, value) != value:
                raise ValidationError(f"parameter {name!r}: every run of a sweep must use the same secret reference")
    return {parameters.env_name(n): parameters.resolve_reference(f"parameter {n!r}", v) for n, v in refs.items()}


def _run_dask(template: str, todo: list[Run], cwd: str | None, scheduler: str | None, allow_unknown: bool,
              timeout: float | None) -> Iterator[Event]:
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
            futures[client.submit(_dask_run, template, r, cwd, allow_unknown, timeout, pure=False,
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
            yield Event(original.status, original)
    finally:
        client.close()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def save_state(report_dir: Path, runs: Iterable[Run], status: str = "finished") -> None:
    """Compact the outcomes into one file (atomically) and drop the journal they came from."""
    data = {"status": status,
            "runs": [_jsonable(asdict(r)) for r in runs if r.status in ("ok", "failed", "skipped")]}
    secrets.write_private(_state_path(report_dir), secrets.redact(json.dumps(data, indent=1)))
    (report_dir / JOURNAL).unlink(missing_ok=True)


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


#: Report layout and bounds: pages of the runs' notebooks go below the report folder, their
#: shared style in one file; plots are capped so a sweep of thousands stays quick to report.
RUNS_DIR = "runs"
NOTEBOOK_CSS = "notebook.css"
MAX_VALUES = 12  # numbers plotted (the table shows every value)
MAX_SWEPT = 4  # swept parameters each number is plotted against
MAX_SERIES = 8  # lines a plot; more combinations of the other parameters are drawn as points
MAX_HEATMAP = 30  # values a side for a heat map
_STATUS_COLORS = {"ok": "#2e7d32", "failed": "#c62828"}


def write_summary(runs: list[Run], report_dir: str | os.PathLike[str], title: str) -> dict[str, Path]:
    """Write the sweep's report into ``report_dir``; return the paths of its parts.

    ``summary.csv`` and ``summary.parquet`` (one row a run), ``overview.png`` (durations and
    statuses), a ``value-*.png`` per number recorded with ``glue`` against each swept
    parameter, each run's output notebook as HTML under ``runs/``, and ``index.html`` tying
    them together (readable durations, paths relative to the report). Every file is scrubbed
    of secrets and written atomically. The work grows linearly with the runs, and a page of a
    notebook that has not changed since it was rendered is kept, not rendered again.
    """
    report = Path(report_dir)
    if report.exists() and not report.is_dir():
        raise ValidationError(f"{report}: is a file; the sweep report needs a folder")
    report.mkdir(parents=True, exist_ok=True)
    ordered = sorted(runs, key=lambda r: r.index)
    frame = summary_frame(ordered)
    out = {"csv": report / "summary.csv", "parquet": report / "summary.parquet",
           "png": report / "overview.png", "html": report / "index.html", "runs": report / RUNS_DIR}
    _write(out["csv"], frame.to_csv(index=False))
    _write(out["parquet"], _parquet(frame))
    names = list(dict.fromkeys(k for r in ordered for k in r.parameters))
    swept = [n for n in names if n in frame and frame[n].astype(str).nunique() > 1  # plotted: scalars that vary
             and all(isinstance(v, int | float | str | None) for v in frame[n])]
    overview = _plot(frame, title)
    _write(out["png"], overview)
    plots = _value_plots(frame, swept, report)
    pages = _render_notebooks(ordered, out["runs"])
    _write(out["html"], _html(frame, names, swept, plots, pages, report, title, overview))
    return out


def _write(path: Path, data: str | bytes) -> None:
    """Each file of the report: text scrubbed of secrets, written atomically."""
    secrets.write_private(path, secrets.redact(data) if isinstance(data, str) else data)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _is_number(column: Any) -> bool:
    import pandas as pd

    return bool(len(column)) and pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _parquet(frame: Any) -> bytes:
    """The frame as Parquet: text scrubbed, columns of mixed types as text (Parquet needs one type)."""
    import pandas as pd

    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        kinds = {type(v) for v in values if not _missing(v)}
        if len(kinds) > 1 or kinds == {str}:
            frame[column] = values.map(lambda v: None if _missing(v) else secrets.redact(str(v)))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _figure(width: float, height: float) -> Any:
    """A matplotlib figure drawn by Agg, outside pyplot: no global state, nothing to close."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _plot(frame: Any, title: str) -> bytes:
    """The overview: how long each run took, coloured by status (grey: done earlier)."""
    many = len(frame) > 60  # a bar a run stops being readable: a point a run instead
    fig = _figure(8, 4.5 if many else max(2.0, 0.22 * len(frame) + 1))
    ax = fig.subplots()
    durations = frame["duration_s"].astype(float).fillna(0).tolist()
    colors = ["#9e9e9e" if skipped else _STATUS_COLORS.get(status, "#616161")
              for skipped, status in zip(frame["skipped"], frame["status"], strict=True)]
    if many:
        ax.scatter(frame["run"].tolist(), durations, c=colors, s=8)
        ax.set_xlabel("run")
        ax.set_ylabel("seconds")
    else:
        ax.barh([f"#{i}" for i in frame["run"]], durations, color=colors)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
    ok, failed = int((frame["status"] == "ok").sum()), int((frame["status"] == "failed").sum())
    ax.set_title(secrets.redact(f"{title}: {ok} ok, {failed} failed, {int(frame['skipped'].sum())} skipped "
                                f"of {len(frame)}"))
    return _png(fig)


def _value_plots(frame: Any, swept: list[str], report: Path) -> list[tuple[str, str]]:
    """A PNG per number recorded with ``glue`` against each swept parameter; (file, caption)s.

    Only runs that finished count. Two swept parameters that form a grid (a run a cell) give
    one heat map; otherwise the number is drawn against each parameter, a line for each
    combination of the others (points and their mean when there are too many).
    """
    ok = frame[frame["status"] == "ok"]
    columns = [c for c in frame.columns if c.startswith("value.") and _is_number(ok[c].dropna())][:MAX_VALUES]
    if not columns or not swept or ok.empty:
        return []
    files = paths.folder_names([c.removeprefix("value.") for c in columns])
    against = swept[:MAX_SWEPT]
    grid = len(against) == 2 and all(frame[p].nunique() <= MAX_HEATMAP for p in against) \
        and not frame.duplicated(subset=against).any()
    made = []
    for column in columns:
        value = column.removeprefix("value.")
        data = ok[[*swept, column]].dropna(subset=[column])
        if data.empty:
            continue
        if grid:
            name = f"value-{files[value]}-by-{against[0]}-and-{against[1]}.png"
            _write(report / name, _heatmap(frame, data, against, column, value))
            made.append((name, f"{value} by {against[0]} and {against[1]}"))
            continue
        for x in against:
            name = f"value-{files[value]}-by-{x}.png"
            _write(report / name, _lines(data, x, [p for p in swept if p != x], column, value))
            made.append((name, f"{value} against {x}"))
    return made


def _axis(values: Any) -> tuple[Any, list[str] | None]:
    """Positions on an axis: numbers as they are, anything else in order of first appearance."""
    if _is_number(values):
        return values.astype(float), None
    labels = list(dict.fromkeys(values.astype(str)))
    return values.astype(str).map({label: i for i, label in enumerate(labels)}), labels


def _lines(data: Any, x: str, others: list[str], column: str, value: str) -> bytes:
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    positions, labels = _axis(data[x])
    data = data.assign(**{" x": positions})  # a column name no parameter (an identifier) has
    groups = list(data.groupby(others, dropna=False, sort=False)) if others else [((), data)]
    if len(groups) > MAX_SERIES:
        ax.scatter(data[" x"], data[column], s=10, color="#90a4ae",
                   label=f"each run ({len(groups)} combinations of {', '.join(others)})")
        mean = data.groupby(" x")[column].mean()
        ax.plot(mean.index, mean.to_numpy(), "-", color="#1565c0", label="mean")
        ax.legend(fontsize="small")
    else:
        for key, group in groups:
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{p}={v}" for p, v in zip(others, key, strict=True)) or None
            mean = group.groupby(" x")[column].mean()
            (line,) = ax.plot(mean.index, mean.to_numpy(), "-o", markersize=4,
                              label=secrets.redact(label) if label else None)
            if len(group) > len(mean):  # several runs at one x: show each, the line is their mean
                ax.scatter(group[" x"], group[column], s=8, color=line.get_color(), alpha=0.4)
        if others:
            ax.legend(fontsize="small")
    if labels is not None:
        ax.set_xticks(range(len(labels)), [secrets.redact(t) for t in labels] if len(labels) <= 30 else None)
    elif data[" x"].min() > 0 and data[" x"].max() >= 100 * data[" x"].min():  # learning rates and the like
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(secrets.redact(value))
    ax.set_title(secrets.redact(f"{value} against {x}"))
    return _png(fig)


def _heatmap(frame: Any, data: Any, pair: list[str], column: str, value: str) -> bytes:
    """``value`` on the grid of two parameters; cells of failed runs stay blank."""
    import numpy as np

    a, b = pair
    order = {p: sorted(frame[p].unique()) if _is_number(frame[p])
             else list(dict.fromkeys(frame[p])) for p in pair}
    table = data.pivot_table(index=b, columns=a, values=column, aggfunc="mean").reindex(index=order[b], columns=order[a])
    cells = np.ma.masked_invalid(table.to_numpy(dtype=float))
    fig = _figure(max(4.0, 0.5 * len(order[a]) + 2.5), max(3.0, 0.4 * len(order[b]) + 1.8))
    ax = fig.subplots()
    image = ax.imshow(cells, aspect="auto", origin="lower", cmap="viridis")
    fig.colorbar(image, ax=ax, label=secrets.redact(value))
    ax.set_xticks(range(len(order[a])), [secrets.redact(str(v)) for v in order[a]])
    ax.set_yticks(range(len(order[b])), [secrets.redact(str(v)) for v in order[b]])
    ax.set_xlabel(a)
    ax.set_ylabel(b)
    if cells.size <= 144:  # small grids: the numbers too
        for (row, col), number in np.ndenumerate(cells.filled(np.nan)):
            if number == number:  # dark text on the light end of the colour map
                ax.text(col, row, f"{number:.3g}", ha="center", va="center", fontsize=7,
                        color="black" if image.norm(number) > 0.6 else "white")
    ax.set_title(secrets.redact(f"{value} by {a} and {b}"))
    return _png(fig)


def _render_notebooks(runs: list[Run], folder: Path) -> dict[int, str]:
    """Each finished run's output notebook as HTML (``runs/run-N.html``): index -> link.

    A page newer than its local notebook, or of a remote one skipped this time, is kept as it
    is. Others are rendered with one nbconvert exporter, the notebook style in one shared
    file, scrubbed and written. A notebook that cannot be read or rendered gets no page; after
    one remote notebook could not be read, no other is tried (one wait, not one a run).
    """
    pages: dict[int, str] = {}
    renderer: _NotebookRenderer | None = None
    remote = True
    for r in runs:
        if r.status not in ("ok", "failed", "skipped") or not r.output or ("://" in r.output and not remote):
            continue
        page = folder / f"run-{r.index}.html"
        link = f"{RUNS_DIR}/{page.name}"
        if _fresh(page, r):
            pages[r.index] = link
            continue
        text = _read_output(r.output)
        if text is None:
            remote = remote and "://" not in r.output
            continue
        renderer = renderer or _NotebookRenderer(folder)
        body = renderer.render(text, f"run {r.index}")
        if body is not None:
            _write(page, body)
            pages[r.index] = link
    return pages


def _fresh(page: Path, r: Run) -> bool:
    try:
        made = page.stat().st_mtime
    except OSError:
        return False
    if "://" in r.output:
        return r.status == "skipped"
    try:
        return made >= os.stat(r.output).st_mtime
    except OSError:
        return False


def _read_output(url: str) -> str | None:
    """An output notebook's text, local or through the storage layer; None if unreadable."""
    try:
        if "://" not in url:
            return Path(url).read_bytes().decode()
        from nbplugins.storage import filesystem

        fs, path = filesystem(url)
        with fs.open(path, "rb") as handle:
            return handle.read().decode()
    except Exception as exc:  # a missing or unreadable output: the table still lists the run
        log.info("no page for %s: %s", url, exc)
        return None


class _NotebookRenderer:
    """nbconvert's HTML exporter, made once; the style every notebook page shares goes to one
    file (a page embeds about 280 KB of it otherwise)."""

    _STYLE = re.compile(r"<style[^>]*>(.*?)</style>\s*", re.S)

    def __init__(self, folder: Path) -> None:
        import nbformat
        from nbconvert import HTMLExporter

        self.exporter = HTMLExporter()
        empty, _ = self.exporter.from_notebook_node(nbformat.v4.new_notebook())
        found = list(self._STYLE.finditer(empty))
        self.shared = [m.group(0) for m in found]
        _write(folder / NOTEBOOK_CSS, "\n".join(m.group(1) for m in found))

    def render(self, text: str, name: str) -> str | None:
        import nbformat

        try:
            nb = nbformat.reads(text, as_version=4)
            secrets.redact_notebook(nb)  # before escaping: a secret with & or < must still match
            with warnings.catch_warnings():  # scrapbook's glue outputs have no HTML form: a warning each
                warnings.filterwarnings("ignore", "Your element with mimetype", UserWarning)
                body, _ = self.exporter.from_notebook_node(nb, resources={"metadata": {"name": name}})
        except Exception as exc:  # a notebook nbconvert cannot render gets no page; the run is listed
            log.info("no page for %s: %s", name, exc)
            return None
        for block in self.shared:
            body = body.replace(block, "", 1)
        return body.replace("</head>", f'<link rel="stylesheet" href="{NOTEBOOK_CSS}">\n</head>', 1)


def _duration(seconds: Any) -> str:
    """``0.35 s``, ``1.2 s``, ``3 min 4 s``, ``2 h 5 min``; empty when unknown."""
    if _missing(seconds):
        return ""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _text(value: Any, limit: int = 300) -> str:
    if _missing(value):
        return ""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _href(target: str) -> str:
    return html.escape(urllib.parse.quote(target), quote=True)


def _output_cell(output: Any, report: Path) -> str:
    """The output path relative to the report (a link), or the storage URL as text."""
    if _missing(output) or not output:
        return ""
    if "://" in output:
        return html.escape(output)
    relative = os.path.relpath(output, report.resolve()).replace(os.sep, "/")
    return f'<a href="{_href(relative)}">{html.escape(relative)}</a>'


def _html(frame: Any, names: list[str], swept: list[str], plots: list[tuple[str, str]], pages: dict[int, str],
          report: Path, title: str, overview: bytes) -> str:
    """index.html: counts, the overview, the plots of recorded values, and a row a run."""
    import base64

    esc = html.escape
    values = [c for c in frame.columns if c.startswith("value.")]
    head = ["run", *names, "status", "duration", "notebook", "output", *(c.removeprefix("value.") for c in values),
            "error"]
    rows = []
    for rec in frame.to_dict("records"):
        status = "ok (done earlier)" if rec["skipped"] and rec["status"] == "ok" else rec["status"]
        page = pages.get(rec["run"])
        cells = [esc(str(rec["run"])), *(esc(_text(rec.get(n))) for n in names),
                 esc(status), esc(_duration(rec["duration_s"])),
                 f'<a href="{_href(page)}">notebook</a>' if page else "",
                 _output_cell(rec["output"], report), *(esc(_text(rec.get(c))) for c in values),
                 esc(_text(rec.get("error")))]
        rows.append(f'<tr class="{esc(rec["status"])}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    counts = frame["status"].value_counts()
    summary = (f"{len(frame)} runs: {int(counts.get('ok', 0))} ok, {int(counts.get('failed', 0))} failed, "
               f"{int(frame['skipped'].sum())} done earlier; swept: {', '.join(swept) or 'nothing'}")
    if plots:
        figures = "".join(f'<figure><a href="{_href(f)}"><img src="{_href(f)}" alt="{esc(c)}" loading="lazy"></a>'
                          f"<figcaption>{esc(c)}</figcaption></figure>" for f, c in plots)
        shown = "" if len(swept) <= MAX_SWEPT else f" (against the first {MAX_SWEPT} swept parameters)"
        section = f"<h2>Recorded values</h2><p>Finished runs only{shown}.</p><div class=plots>{figures}</div>"
    else:
        section = ("<h2>Recorded values</h2><p>Nothing to plot: no number recorded with "
                   "<code>scraps.glue(name, value)</code>, or no parameter takes more than one value.</p>")
    image = base64.b64encode(overview).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table.runs{{border-collapse:collapse;font-size:13px}}
table.runs td,table.runs th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}
tr.failed td{{background:#fdecea}} .plots{{display:flex;flex-wrap:wrap;gap:1em}} figure{{margin:0}}
.plots img{{max-width:480px}}</style></head><body>
<h1>{esc(title)}</h1><p>{esc(summary)}</p>
<img alt="durations and statuses" src="data:image/png;base64,{image}">
{section}
<h2>Runs</h2>
<p><a href="summary.csv">summary.csv</a> · <a href="summary.parquet">summary.parquet</a></p>
<table class="runs"><thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr></thead>
<tbody>{''.join(rows)}</tbody></table></body></html>
"""
