"""Sweep output patterns filled with grid and table values never write outside the pattern's
folder: a value that is not one path segment is refused before any run, naming the run, the
parameter and the value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbplugins import sweep
from nbplugins.errors import ValidationError
from tests.papermill import notebooks


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def here(tmp_path) -> Path:
    """The working directory, two levels down, with the template, a grid and a table."""
    cwd = tmp_path / "a" / "b"
    notebooks.write(cwd / "square.ipynb", "n = 1\nlabel = 'x'", "print(n * n, label)")
    return cwd


@pytest.mark.parametrize("value", ["../../x", "a/b", "..", ""])
@pytest.mark.parametrize("source", ["grid", "table"])
def test_a_value_that_is_not_one_segment_is_refused_before_any_run(tmp_path, here, value, source):
    if source == "grid":
        (here / "grid.yaml").write_text(f"n: 1\nlabel: [ok, {value!r}]\n")
        option = ("--grid", "grid.yaml")
    else:
        (here / "table.csv").write_text(f"n,label\n1,ok\n2,\"{value}\"\n")
        option = ("--params", "table.csv")
    before = _files(tmp_path)
    result = subprocess.run([sys.executable, "-m", "nbplugins", "sweep", "square.ipynb", *option,
                             "-o", "out/{label}.ipynb"], capture_output=True, text=True, cwd=here,
                            env=dict(os.environ), timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"run 1: parameter 'label' value {value!r}" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "nothing was run" in result.stderr
    assert _files(tmp_path) == before  # no notebook, no folder, no report anywhere


def test_an_output_leaving_the_patterns_folder_is_refused(here, monkeypatch):
    monkeypatch.chdir(here)
    template = str(here / "square.ipynb")
    with pytest.raises(ValidationError, match=r"run 0 \(label='x'\) would write") as info:
        sweep.plan(template, [{"label": "x"}], "out/{label}/../../../{label}.ipynb")
    assert f"{here.parent / 'x.ipynb'}, outside {here / 'out'}" in str(info.value)
    with pytest.raises(ValidationError, match="parameter 'label' value 'p/q'"):
        sweep.plan(template, [{"label": "p/q"}], "s3://bucket/{label}.ipynb")  # remote keys too
    with pytest.raises(ValidationError, match="contains '/'"):
        sweep.plan(template, [{"n": 3}], "out/{n:/>4}.ipynb")  # what the format makes of the value
    runs = sweep.plan(template, [{"label": "a..b", "n": 2}, {"label": "0.5", "n": 3}], "out/{label}-{n}.ipynb")
    assert [r.output for r in runs] == [str(here / "out" / "a..b-2.ipynb"), str(here / "out" / "0.5-3.ipynb")]
