"""HTML report of a pipeline run: status table, a per-node timeline (Gantt) and a picture of the DAG.

Built from the run record alone (``run.json``), so a report can be redrawn for any past run
with ``write(json.load(...), path)``. Both pictures are inline SVG: the file is one
self-contained page that opens anywhere, with nothing to fetch.
"""

from __future__ import annotations

import html
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from nbplugins import files, secrets
from nbplugins.pipelines import graph

COLOURS = {"succeeded": "#2e9d57", "reused": "#7fbf95", "failed": "#d64545", "skipped": "#b0b0b0",
           "running": "#e6a23c", "pending": "#dddddd"}


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "-"


def timeline_svg(record: dict[str, Any], width: int = 760) -> str:
    """A Gantt chart: one bar per node from its start to its end, coloured by status."""
    nodes = record["nodes"]
    timed = [(label, n) for label, n in nodes.items() if n.get("start") and n.get("end")]
    row, left, top = 26, 150, 24
    height = top + row * max(len(nodes), 1) + 30
    t0 = min((n["start"] for _, n in timed), default=record.get("start") or 0)
    t1 = max((n["end"] for _, n in timed), default=t0 + 1)
    span = max(t1 - t0, 1e-6)
    scale = (width - left - 20) / span
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="timeline" '
             f'font-family="sans-serif" font-size="12">']
    ticks = 5
    for i in range(ticks + 1):
        x = left + i * (width - left - 20) / ticks
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 24}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" fill="#666">{span * i / ticks:.1f} s</text>')
    for i, (label, n) in enumerate(nodes.items()):
        y = top + i * row
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{_esc(label)}</text>')
        colour = COLOURS.get(n.get("status"), "#999")
        if n.get("start") and n.get("end"):
            x = left + (n["start"] - t0) * scale
            w = max((n["end"] - n["start"]) * scale, 2)
            if n.get("status") == "reused":  # from an earlier attempt: draw at zero, hatched by opacity
                x, w = left, 4
            parts.append(f'<rect class="bar" data-node="{_esc(label)}" x="{x:.1f}" y="{y + 4}" width="{w:.1f}" '
                         f'height="{row - 8}" rx="3" fill="{colour}"><title>{_esc(label)}: {_esc(n.get("status"))}, '
                         f'{(n.get("duration") or 0):.1f} s</title></rect>')
        else:
            parts.append(f'<text x="{left + 4}" y="{y + 16}" fill="#888">{_esc(n.get("status"))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def dag_svg(record: dict[str, Any]) -> str:
    """The pipeline graph in layers by depth, nodes coloured by status, arrows parent -> child."""
    nodes = record["nodes"]
    depth = graph.depths({label: n.get("depends_on", []) for label, n in nodes.items()})
    columns: dict[int, list[str]] = {}
    for label in nodes:
        columns.setdefault(depth[label], []).append(label)
    box_w, box_h, dx, dy, pad = 150, 38, 210, 64, 20
    tallest = max((len(c) for c in columns.values()), default=1)
    width = pad * 2 + (max(columns, default=0)) * dx + box_w
    height = pad * 2 + (tallest - 1) * dy + box_h
    pos: dict[str, tuple[float, float]] = {}
    for d, labels in columns.items():
        offset = (tallest - len(labels)) * dy / 2
        for i, label in enumerate(labels):
            pos[label] = (pad + d * dx, pad + offset + i * dy)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="dag" '
             'font-family="sans-serif" font-size="12">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    for label, n in nodes.items():
        for parent in n.get("depends_on", []):
            if parent in pos:
                (x1, y1), (x2, y2) = pos[parent], pos[label]
                parts.append(f'<path class="edge" d="M {x1 + box_w:.0f} {y1 + box_h / 2:.0f} C {x1 + box_w + 30:.0f} '
                             f'{y1 + box_h / 2:.0f}, {x2 - 30:.0f} {y2 + box_h / 2:.0f}, {x2:.0f} {y2 + box_h / 2:.0f}" '
                             'fill="none" stroke="#555" marker-end="url(#arrow)"/>')
    for label, (x, y) in pos.items():
        colour = COLOURS.get(nodes[label].get("status"), "#999")
        parts.append(f'<g class="node" data-node="{_esc(label)}"><rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" '
                     f'rx="6" fill="{colour}" stroke="#333"/><text x="{x + box_w / 2}" y="{y + 16}" '
                     f'text-anchor="middle" fill="#111">{_esc(label)}</text><text x="{x + box_w / 2}" y="{y + 31}" '
                     f'text-anchor="middle" fill="#222" font-size="10">{_esc(nodes[label].get("status"))}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def render(record: dict[str, Any]) -> str:
    """The report page for a run record."""
    nodes = record["nodes"]
    total = (record.get("end") or 0) - (record.get("start") or 0)
    rows = []
    for label, n in nodes.items():
        outputs = ", ".join(f"{_esc(os.path.basename(o['path']))} ({o['bytes']} B)" for o in n.get("outputs") or [])
        link = ""
        target = n.get("output_notebook") or n.get("log")
        if target:
            link = f'<a href="{_esc(target)}">{_esc(os.path.basename(target))}</a>'
        rows.append(
            f'<tr class="{_esc(n.get("status"))}"><td>{_esc(label)}</td><td><span class="badge" style="background:'
            f'{COLOURS.get(n.get("status"), "#999")}">{_esc(n.get("status"))}</span></td>'
            f'<td>{_esc(n.get("file"))}</td><td>{_seconds(n.get("duration"))}</td>'
            f'<td>{link}</td><td>{outputs}</td><td class="error">{_esc(n.get("error") or "")}</td></tr>')
    params = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(json.dumps(v))}</td></tr>" for k, v in
                     (record.get("parameters") or {}).items()) or "<tr><td colspan=2>none</td></tr>"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_esc(record['pipeline'])}: pipeline run</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }}
.badge {{ color: white; padding: 1px 6px; border-radius: 4px; }}
.error {{ color: #a00; max-width: 30em; }}
</style></head><body>
<h1>Pipeline <code>{_esc(record['pipeline'])}</code>: {_esc(record.get('status'))}</h1>
<p>Run <code>{_esc(record.get('run_name'))}</code> (attempt {_esc(record.get('attempt', 1))}) in
<code>{_esc(record.get('run_dir'))}</code>, started {_when(record.get('start'))}, {total:.1f} s,
{_esc(record.get('jobs'))} nodes at a time. Source: <code>{_esc(record.get('source'))}</code>.</p>
<h2>Nodes</h2>
<table id="nodes"><tr><th>node</th><th>status</th><th>file</th><th>duration</th><th>executed</th><th>outputs</th>
<th>error</th></tr>{''.join(rows)}</table>
<h2>Timeline</h2>
{timeline_svg(record)}
<h2>Graph</h2>
{dag_svg(record)}
<h2>Parameters</h2>
<table>{params}</table>
</body></html>
"""
    return secrets.redact(page)


def write(record: dict[str, Any], path: str | os.PathLike[str], pipeline: Any = None) -> Path:
    """Write the report next to the run record (atomically)."""
    path = Path(path)
    files.write_atomic(path, render(record), mode=None)
    return path
