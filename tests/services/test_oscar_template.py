"""``templates/oscar_step.ipynb`` runs with the nbplugins engine and as a pipeline node, records its
per-input table with ``nbplugins.scraps.glue``, and keeps the cluster password out of the notebook."""

# ruff: noqa: F811 -- fixtures imported from oscar_fixtures are test parameters

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest

from nbplugins import scraps
from nbplugins.errors import ExecutionError
from nbplugins.papermill import parameters
from nbplugins.papermill.engine import execute
from tests.servers.oscar_fixtures import oscar_factory, oscar_server  # noqa: F401
from tests.services.test_oscar import DEFAULTS, basic, write_fdl

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "templates" / "oscar_step.ipynb"


@pytest.fixture
def srv(oscar_server, monkeypatch):
    oscar_server.configure(**DEFAULTS)
    oscar_server.reset_counts()
    monkeypatch.setenv("OSCAR_ENDPOINT", oscar_server.url)
    monkeypatch.setenv("OSCAR_USER", oscar_server.user)
    monkeypatch.setenv("OSCAR_PASSWORD", oscar_server.password)
    return oscar_server


def service(server, tmp_path) -> str:
    from nbplugins.services import fdl

    name = f"svc-{uuid.uuid4().hex[:8]}"
    basic(server).deploy(fdl.load(write_fdl(tmp_path, name)))
    return name


def test_the_template_says_what_it_does_and_declares_its_parameters():
    nb = nbformat.read(TEMPLATE, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "Inputs" in nb.cells[0].source
    assert set(parameters.declared(nb)) == {"cluster", "service", "inputs", "destination", "mode", "timeout"}


def test_async_mode_records_the_table_and_fails_when_an_input_fails(srv, tmp_path):
    name = service(srv, tmp_path)
    for n in ("a.txt", "bad.txt"):
        (tmp_path / n).write_text(n)
    nb = execute(TEMPLATE, tmp_path / "ok.ipynb", {"service": name, "inputs": [str(tmp_path / "a.txt")],
                                                  "destination": str(tmp_path / "out"), "timeout": 120.0})
    rows = scraps.read(nb)["results"]
    assert [r["status"] for r in rows] == ["succeeded"] and (tmp_path / "out" / "a" / "a.out").read_text() == "A.TXT"
    srv.configure(fail_inputs_matching="^bad")
    with pytest.raises(ExecutionError):
        execute(TEMPLATE, tmp_path / "bad.ipynb", {"service": name, "destination": str(tmp_path / "out"),
                                                   "inputs": [str(tmp_path / "a.txt"), str(tmp_path / "bad.txt")]})
    saved = nbformat.read(tmp_path / "bad.ipynb", as_version=4)
    assert [r["status"] for r in scraps.read(saved)["results"]] == ["skipped", "failed"]
    text = (tmp_path / "ok.ipynb").read_text() + (tmp_path / "bad.ipynb").read_text()
    assert srv.password not in text and srv.s3_keys["secret_key"] not in text


def test_sync_mode_writes_each_answer(srv, tmp_path):
    name = service(srv, tmp_path)
    nb = execute(TEMPLATE, tmp_path / "sync.ipynb", {"service": name, "inputs": ["one", "two"], "mode": "sync",
                                                    "destination": str(tmp_path / "out"), "timeout": 60.0})
    rows = scraps.read(nb)["results"]
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert (tmp_path / "out" / "input-2" / "output.txt").read_text() == "TWO"


def test_the_template_runs_as_a_pipeline_node(srv, tmp_path):
    name = service(srv, tmp_path)
    work = tmp_path / "pipe"
    work.mkdir()
    shutil.copy(TEMPLATE, work / "oscar_step.ipynb")
    (work / "a.txt").write_text("node input")
    (work / "spec.yaml").write_text(
        "name: oscar-node\nruntime_image: quay.io/jupyter/scipy-notebook:2025-03-14\nnodes:\n  upper:\n"
        "    notebook: oscar_step.ipynb\n    dependencies: [a.txt]\n"
        f"    parameters:\n      service: {name}\n      inputs: [a.txt]\n      destination: results\n"
        "      timeout: 120.0\n    outputs: [results/a/a.out]\n")
    env = dict(os.environ)

    def nbp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nbplugins", *args], capture_output=True, text=True, cwd=work,
                              env=env, timeout=300)

    built = nbp("pipeline", "build", "spec.yaml", "-o", "oscar.pipeline")
    assert built.returncode == 0, built.stderr
    ran = nbp("pipeline", "run", "oscar.pipeline", "--run-dir", "run")
    assert ran.returncode == 0, ran.stderr
    record = json.loads((work / "run" / "run.json").read_text())
    assert json.dumps(record).count("succeeded") >= 1
    out = next((work / "run").rglob("a.out"))
    assert out.read_text() == "NODE INPUT"
    assert srv.password not in "".join(p.read_text(errors="replace") for p in (work / "run").rglob("*") if p.is_file())
