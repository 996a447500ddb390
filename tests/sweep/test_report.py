"""The sweep report a scientist reads: recorded values plotted against the swept parameters,
a readable table with paths relative to the report, and each run's notebook as HTML
(issue #16, section 6)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from nbplugins import secrets, sweep
from tests.papermill import notebooks

GLUES = (
    "import os\n"
    "from nbplugins import scraps\n"
    "print('the token is', token)\n"
    "if a == 3 and mode == 'slow':\n    raise RuntimeError('run a=3 slow fails on purpose')\n"
    "scraps.glue('score', a * (2 if mode == 'slow' else 1))\n"
    "scraps.glue('note', f'a={a}')"
)


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbplugins", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, timeout=600)


def links(page: str) -> list[str]:
    return [urllib.parse.unquote(h) for h in re.findall(r'(?:href|src)="([^"]+)"', page)]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_a_real_sweep_reports_values_against_parameters_with_relative_links_and_run_pages(tmp_path, canary):
    notebooks.write(tmp_path / "tpl" / "glue.ipynb", "a = 1\nmode = 'fast'\ntoken = ''", GLUES)
    (tmp_path / "grid.yaml").write_text("a: [1, 2, 3]\nmode: [fast, slow]\ntoken: '@env:NBP_REPORT_SECRET'\n")
    args = ("sweep", "tpl/glue.ipynb", "--grid", "grid.yaml", "-o", "out/{mode}-{a}.ipynb", "--report-dir", "report")
    result = cli(*args, cwd=tmp_path, env={"NBP_REPORT_SECRET": canary})
    assert result.returncode == 1 and "5 ok, 1 failed, 0 skipped" in result.stdout, result.stderr
    report = tmp_path / "report"
    page = (report / "index.html").read_text()

    # two swept parameters on a grid: one heat map of the glued number (not of the text one)
    plot = report / "value-score-by-a-and-mode.png"
    assert png_size(plot)[0] > 100 and not list(report.glob("value-note-*"))
    assert 'src="value-score-by-a-and-mode.png"' in page and "score by a and mode" in page
    # every link is relative to the report and leads to a file that exists
    hrefs = [h for h in links(page) if not h.startswith("data:")]
    assert hrefs and not [h for h in hrefs if h.startswith("/") or "://" in h]
    assert all((report / h).exists() for h in hrefs), [h for h in hrefs if not (report / h).exists()]
    assert "../out/slow-2.ipynb" in hrefs
    # each run's notebook, the failed one too, rendered as HTML and linked from its row
    for index in range(6):
        assert f"runs/run-{index}.html" in hrefs
        assert "the token is ***" in (report / "runs" / f"run-{index}.html").read_text()  # printed, scrubbed
    assert "run a=3 slow fails on purpose" in (report / "runs" / "run-5.html").read_text()
    assert (report / "runs" / "notebook.css").stat().st_size > 10_000  # the style, once for every page
    # readable durations, and the summary files kept as they were
    assert re.search(r"<td>\d+\.\d{1,2} s</td>", page) and "duration_s" not in page
    table = pd.read_csv(report / "summary.csv")
    assert table["value.score"].dropna().tolist() == [1, 2, 2, 4, 3]
    assert pd.read_parquet(report / "summary.parquet")["status"].tolist().count("failed") == 1
    # the secret reached the kernels, and no file of the report
    for path in report.rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path

    # a second invocation skips the runs and keeps their pages as they are
    stamps = {p.name: p.stat().st_mtime_ns for p in (report / "runs").glob("run-*.html")}
    again = cli(*args, cwd=tmp_path, env={"NBP_REPORT_SECRET": canary})
    assert "0 ok, 1 failed, 5 skipped" in again.stdout, again.stderr
    kept = {p.name: p.stat().st_mtime_ns for p in (report / "runs").glob("run-*.html")}
    assert {k: v for k, v in kept.items() if k != "run-5.html"} == {k: v for k, v in stamps.items()
                                                                    if k != "run-5.html"}
    assert "ok (done earlier)" in (report / "index.html").read_text()


def fake_runs(tmp_path: Path, grid: list[dict], value=lambda p: float(sum(v for v in p.values()
                                                                          if isinstance(v, int | float)))):
    return [sweep.PlannedRun(index=i, parameters=p, output=str(tmp_path / "out" / f"{i}.ipynb"), status="ok",
                             duration=1.0 + i, values={"loss": value(p), "best": True, "name": "x"})
            for i, p in enumerate(grid)]


def test_one_parameter_gives_a_line_three_give_a_plot_each_and_two_on_a_grid_a_heat_map(tmp_path):
    one = fake_runs(tmp_path, [{"lr": lr, "label": "same"} for lr in (0.1, 0.01, 0.001)])
    sweep.write_summary(one, tmp_path / "one", "one")
    assert sorted(p.name for p in (tmp_path / "one").glob("value-*.png")) == ["value-loss-by-lr.png"]

    three = fake_runs(tmp_path, [{"lr": lr, "opt": opt, "batch": b} for lr in (0.1, 0.01) for opt in ("adam", "sgd")
                                 for b in (16, 64)])
    sweep.write_summary(three, tmp_path / "three", "three")
    assert sorted(p.name for p in (tmp_path / "three").glob("value-*.png")) == [
        "value-loss-by-batch.png", "value-loss-by-lr.png", "value-loss-by-opt.png"]

    two = fake_runs(tmp_path, [{"lr": lr, "opt": opt} for lr in (0.1, 0.01, 0.001) for opt in ("adam", "sgd")])
    two[2].status, two[2].values = "failed", {}  # a blank cell
    sweep.write_summary(two, tmp_path / "two", "two")
    assert sorted(p.name for p in (tmp_path / "two").glob("value-*.png")) == ["value-loss-by-lr-and-opt.png"]

    # two parameters that are not a grid (a repeated pair): a line per value of the other
    repeated = fake_runs(tmp_path, [{"lr": 0.1, "opt": "adam"}, {"lr": 0.1, "opt": "adam"}, {"lr": 0.2, "opt": "sgd"}])
    sweep.write_summary(repeated, tmp_path / "repeated", "repeated")
    assert sorted(p.name for p in (tmp_path / "repeated").glob("value-*.png")) == [
        "value-loss-by-lr.png", "value-loss-by-opt.png"]


def test_the_table_is_readable_escaped_and_scrubbed(tmp_path, canary):
    secrets.register(canary, "test")
    runs = fake_runs(tmp_path, [{"n": n, "label": "<b>bold</b>"} for n in range(5)])
    for r, seconds in zip(runs, (0.35, 1.24, 184.4, 7500.0, None), strict=True):
        r.duration = seconds
    runs[1].status, runs[1].error, runs[1].values = "failed", f"ValueError: <script>alert(1)</script> {canary}", {}
    runs[2].output, runs[2].status = "s3://bucket/out/2.ipynb", "pending"  # (not read: no S3 here)
    paths = sweep.write_summary(runs, tmp_path / "report", "a <sweep>")
    page = paths["html"].read_text()
    cells = re.findall(r"<td>([^<]*)</td>", page)
    for shown in ("0.35 s", "1.2 s", "3 min 4 s", "2 h 5 min"):
        assert shown in cells
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<title>a &lt;sweep&gt;</title>" in page
    assert "<td>s3://bucket/out/2.ipynb</td>" in page and '<a href="../out/0.ipynb">../out/0.ipynb</a>' in page
    for path in (tmp_path / "report").rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("count", [240])
def test_many_runs_report_in_linear_time_and_a_bounded_overview(tmp_path, count):
    template = notebooks.write(tmp_path / "t.ipynb", "n = 1", "print(n)")
    nb = nbformat.read(template, as_version=4)
    runs = fake_runs(tmp_path, [{"n": i % 20, "seed": i // 20} for i in range(count)])
    (tmp_path / "out").mkdir()
    for r in runs:
        nbformat.write(nb, r.output)
    start = time.monotonic()
    paths = sweep.write_summary(runs, tmp_path / "report", "many")
    first = time.monotonic() - start
    assert len(list((tmp_path / "report" / "runs").glob("run-*.html"))) == count
    assert sum(p.stat().st_size for p in (tmp_path / "report" / "runs").glob("run-*.html")) < count * 60_000
    width, height = png_size(paths["png"])
    assert height < 600  # a point a run, not a bar a run
    start = time.monotonic()
    sweep.write_summary(runs, tmp_path / "report", "many")  # nothing changed: no page rendered again
    assert time.monotonic() - start < max(5.0, first / 3), first
