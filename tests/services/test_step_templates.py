"""The service step templates: run with ``papermill --engine nbplugins`` and as pipeline nodes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

from nbplugins import scraps
from nbplugins.papermill import parameters
from nbplugins.pipelines import elyra, runner, spec
from tests.servers import harness

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
PAPERMILL = harness.venv_bin("papermill")


def papermill(template: str, out: Path, params: dict, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAPERMILL, "--engine", "nbplugins", str(TEMPLATES / template), str(out),
                           "-y", yaml.safe_dump(params), "--cwd", str(out.parent)],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("template", ["dataminer_step.ipynb", "processes_step.ipynb"])
def test_templates_have_a_header_and_the_documented_parameters(template):
    nb = nbformat.read(str(TEMPLATES / template), as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "**Services**" in nb.cells[0].source
    declared = parameters.declared(nb)
    assert {"process", "inputs", "destination", "timeout"} <= set(declared)
    assert "token" not in " ".join(declared)  # credentials come from the environment, never parameters
    assert 'scraps.glue("results"' in nb.cells[-1].source


def test_the_dataminer_step_runs_with_the_engine(wps_server, canary, tmp_path):
    token = f"{canary}-gcube"
    wps_server.set_tokens(token)
    table = tmp_path / "t.csv"
    table.write_text("x\n2\n4\n")
    out = tmp_path / "dataminer.ipynb"
    ran = papermill("dataminer_step.ipynb", out, {
        "process": "CSV_SUMMARY", "inputs": {"InputTable": str(table), "Column": "x", "Operation": "min"},
        "destination": str(tmp_path / "results"), "timeout": 120},
        {"DATAMINER_URL": wps_server.url, "D4SCIENCE_TOKEN": token})
    assert ran.returncode == 0, ran.stderr[-2000:]
    results = scraps.read(nbformat.read(str(out), as_version=4))["results"]
    assert [Path(r["location"]).name for r in results] == ["summary.csv", "log.txt", "values.csv"]
    assert (tmp_path / "results" / "summary.csv").read_text().splitlines()[1] == "x,min,2.0,2"
    for path in [out, *(tmp_path / "results").iterdir()]:
        assert canary not in path.read_text(), path
    assert canary not in ran.stdout + ran.stderr


def test_the_processes_step_runs_with_the_engine(processes_server, tmp_path):
    out = tmp_path / "processes.ipynb"
    ran = papermill("processes_step.ipynb", out, {
        "service": processes_server.url, "auth": "uma", "process": "multi-files", "inputs": {"count": 2},
        "destination": str(tmp_path / "results"), "timeout": 120, "unpack": True},
        {"D4SCIENCE_TOKEN": processes_server.user_token, "D4SCIENCE_CONTEXT": processes_server.context,
         "D4SCIENCE_TOKEN_ENDPOINT": processes_server.token_endpoint})
    assert ran.returncode == 0, ran.stderr[-2000:]
    results = scraps.read(nbformat.read(str(out), as_version=4))["results"]
    assert {Path(r["location"]).name for r in results} >= {"part-1.txt", "part-2.txt", "stdout.txt"}
    assert json.loads((tmp_path / "results" / "results.json").read_text()) == results
    text = out.read_text()
    assert processes_server.user_token not in text


def test_both_steps_run_as_pipeline_nodes(wps_server, processes_server, tmp_path, monkeypatch):
    for name, value in {"DATAMINER_URL": wps_server.url, "D4SCIENCE_TOKEN": processes_server.user_token,
                        "D4SCIENCE_CONTEXT": processes_server.context,
                        "D4SCIENCE_TOKEN_ENDPOINT": processes_server.token_endpoint}.items():
        monkeypatch.setenv(name, value)
    wps_server.set_tokens(processes_server.user_token)  # one VRE token for both services, as on the hub
    ws = tmp_path / "ws"
    shutil.copytree(TEMPLATES, ws / "templates")
    (ws / "pipelines").mkdir()
    (ws / "templates" / "table.csv").write_text("x\n1\n5\n")
    (ws / "pipelines" / "steps.yaml").write_text(yaml.safe_dump({
        "name": "steps", "runtime_image": "quay.io/jupyter/minimal-notebook:2025-03-14",
        "nodes": {
            "dataminer": {"notebook": "../templates/dataminer_step.ipynb", "dependencies": ["table.csv"],
                          "parameters": {"process": "CSV_SUMMARY", "inputs": {"InputTable": "table.csv",
                                                                              "Column": "x"},
                                         "destination": "dm", "timeout": 120},
                          "outputs": ["dm/summary.csv"]},
            "ccp": {"notebook": "../templates/processes_step.ipynb",
                    "parameters": {"service": processes_server.url, "auth": "uma", "process": "multi-files",
                                   "inputs": {"count": 2}, "destination": "ccp", "timeout": 120},
                    "outputs": ["ccp/stdout.txt"]},
        }}, sort_keys=False))
    built = spec.build(ws / "pipelines" / "steps.yaml")
    job = runner.run_pipeline(elyra.load(built), ws / "run", jobs=2)
    assert job.record["status"] == "succeeded", job.summary()
    nodes = ws / "run" / "nodes"
    assert (nodes / "dataminer" / "dm" / "summary.csv").read_text().splitlines()[1] == "x,mean,3.0,2"
    assert (nodes / "ccp" / "ccp" / "output" / "part-2.txt").read_text() == "file 2 of 2\n"
