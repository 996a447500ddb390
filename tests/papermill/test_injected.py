"""The one builder of the injected-parameters cell, for the engine and for exported pipelines."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from nbplugins.errors import ValidationError
from nbplugins.papermill import injected


def test_python_cell_reads_typed_values_and_secrets_from_the_environment():
    code = injected.source("python3", "python", {"n": 3, "name": "x"},
                           from_env={"flag": ("FLAG", False), "rate": ("RATE", 0.5), "k": ("K", 2), "s": ("S", "d")},
                           secret_env={"token": "NBPLUGINS_SECRET_TOKEN"})
    env = {**os.environ, "FLAG": "Yes", "RATE": "1.5", "K": "7", "NBPLUGINS_SECRET_TOKEN": "t0ken"}
    out = subprocess.run([sys.executable, "-c", code + "print(n, name, flag, rate, k, s, token)"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["3", "x", "True", "1.5", "7", "d", "t0ken"]
    assert "t0ken" not in code


def test_r_cell_and_an_unknown_language():
    code = injected.source("ir", "R", {}, from_env={"n": ("N", 1)}, secret_env={"token": "T"})
    assert 'n <- as.integer(Sys.getenv("N", "1"))' in code and 'token <- Sys.getenv("T")' in code
    with pytest.raises(ValidationError, match="Python or R kernel, not julia"):
        injected.source("julia", "julia", {}, secret_env={"token": "T"})


def test_inject_goes_after_the_parameters_cell_and_replaces_an_earlier_one():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"),
                                         nbformat.v4.new_code_cell("n = 1", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("print(n)")])
    injected.inject(nb, "n = 2\n")
    assert [c.source for c in nb.cells] == ["# t", "n = 1", "n = 2\n", "print(n)"]
    injected.inject(nb, "n = 3\n")
    assert [c.source for c in nb.cells] == ["# t", "n = 1", "n = 3\n", "print(n)"]
    assert nb.cells[2].metadata.tags == ["injected-parameters"]
