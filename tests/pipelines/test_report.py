"""The HTML report of a pipeline run, drawn from the run record alone: status table, timeline,
graph, parameters; escaped, scrubbed, one self-contained page."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from nbplugins import secrets
from nbplugins.pipelines import report

T0 = 1_700_000_000.0


def node(status: str, depends_on: list[str], start: float | None = None, end: float | None = None,
         **extra: object) -> dict:
    return {"id": extra.pop("id", "x"), "file": extra.pop("file", "x.ipynb"), "kind": "notebook", "folder": "f",
            "depends_on": depends_on, "status": status, "start": start, "end": end,
            "duration": None if start is None or end is None else end - start, "outputs": [], "error": None,
            "output_notebook": None, "log": None, **extra}


def record() -> dict:
    """A finished run of prepare -> (fit, plot) -> combine with one failure and one skip."""
    return {
        "pipeline": "flagship", "source": "pipelines/flagship.pipeline", "run_name": "run-1", "run_dir": "runs/run-1",
        "attempt": 2, "parameters": {"rows": 100, "label": "a<b"}, "jobs": 2, "status": "failed",
        "start": T0, "end": T0 + 12.5,
        "nodes": {
            "prepare": node("reused", [], T0 - 100, T0 - 90, output_notebook="nodes/prepare/prepare.ipynb",
                            outputs=[{"path": "nodes/prepare/table.csv", "bytes": 2048}]),
            "fit": node("succeeded", ["prepare"], T0 + 1, T0 + 6, output_notebook="nodes/fit/fit.ipynb"),
            "plot <svg>": node("failed", ["prepare"], T0 + 1, T0 + 3, file="plot.py", log="nodes/plot/plot.log",
                               error="ValueError: bad <input> & more"),
            "combine": node("skipped", ["fit", "plot <svg>"]),
        },
    }


class Page(HTMLParser):
    """Collects the tags of the page and the text of the nodes table's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self._in_table = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag == "table" and ("id", "nodes") in attrs:
            self._in_table = True
        elif tag == "tr" and self._in_table:
            self.rows.append([])
        elif tag == "td" and self._in_table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_the_page_has_one_row_per_node_with_its_status_duration_and_links():
    page = Page()
    page.feed(report.render(record()))
    rows = [r for r in page.rows if r]
    assert [r[0] for r in rows] == ["prepare", "fit", "plot <svg>", "combine"]
    assert [r[1] for r in rows] == ["reused", "succeeded", "failed", "skipped"]
    assert rows[1][3] == "5.0 s" and rows[3][3] == "-"
    assert rows[0][4] == "prepare.ipynb" and rows[0][5] == "table.csv (2048 B)"
    assert rows[2][4] == "plot.log" and rows[2][6] == "ValueError: bad <input> & more"
    assert page.tags.count("svg") == 2  # the timeline and the graph, inline: nothing to fetch


def test_names_and_errors_are_escaped_and_links_point_into_the_run():
    html = report.render(record())
    assert "plot &lt;svg&gt;" in html and "<svg>" not in html.replace('<svg xmlns', '')
    assert "bad &lt;input&gt; &amp; more" in html
    assert 'href="nodes/fit/fit.ipynb"' in html and 'href="nodes/plot/plot.log"' in html
    assert "attempt 2" in html and "12.5 s" in html and "&quot;a&lt;b&quot;" in html


def test_the_timeline_draws_timed_nodes_and_the_graph_every_edge():
    rec = record()
    timeline = report.timeline_svg(rec)
    bars = dict(re.findall(r'<rect class="bar" data-node="([^"]+)" x="([\d.]+)"', timeline))
    assert set(bars) == {"prepare", "fit", "plot &lt;svg&gt;"}  # combine never ran
    assert float(bars["prepare"]) == 150.0  # reused: drawn at the start, not 100 s earlier
    dag = report.dag_svg(rec)
    assert dag.count('class="edge"') == 4 and dag.count('class="node"') == 4
    x = {name: float(v) for name, v in re.findall(r'<g class="node" data-node="([^"]+)"><rect x="([\d.]+)"', dag)}
    assert x["prepare"] < x["fit"] == x["plot &lt;svg&gt;"] < x["combine"]  # columns by depth


def test_registered_secrets_never_reach_the_page_and_it_is_written_whole(tmp_path, canary):
    secrets.register(canary)
    rec = record()
    rec["parameters"]["token"] = canary
    rec["nodes"]["fit"]["error"] = f"refused {canary}"
    path = report.write(rec, tmp_path / "run" / "report.html")
    text = path.read_text()
    assert canary not in text and "refused ***" in text
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_a_run_that_never_started_a_node_still_renders():
    rec = record()
    for n in rec["nodes"].values():
        n.update(status="pending", start=None, end=None, duration=None)
    rec.update(status="running", end=None)
    html = report.render(rec)
    assert html.count('class="bar"') == 0 and html.count('class="node"') == 4
