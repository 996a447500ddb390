"""A sweep's summary: CSV and Parquet tables, and an HTML report people look at.

Glued numbers are plotted against the swept parameters, durations are readable, paths are
relative to the report, and each run's notebook is rendered (scrubbed) as HTML.
"""

from __future__ import annotations

import html
import io
import logging
import os
import re
import urllib.parse
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nbplugins import files, paths, secrets
from nbplugins.errors import ValidationError
from nbplugins.sweep.plan import PlannedRun, _plain

log = logging.getLogger(__name__)


def summary_frame(runs: Iterable[PlannedRun]) -> Any:
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


def write_summary(runs: list[PlannedRun], report_dir: str | os.PathLike[str], title: str) -> dict[str, Path]:
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
    files.write_atomic(path, secrets.redact(data) if isinstance(data, str) else data)


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


def _render_notebooks(runs: list[PlannedRun], folder: Path) -> dict[int, str]:
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


def _fresh(page: Path, r: PlannedRun) -> bool:
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
