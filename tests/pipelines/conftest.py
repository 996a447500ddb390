"""Fixtures for the pipeline tests: a workspace of templates, tiny notebooks, Elyra's private
Jupyter dirs, the CLI in-process, and a loopback S3 server (moto) for exports."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import yaml

from nbplugins import cli
from tests.servers import harness

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(harness.venv_bin("elyra-pipeline")).parent


@pytest.fixture(autouse=True)
def elyra_dirs(tmp_path, monkeypatch) -> Path:
    """Private Jupyter data/config/runtime dirs (Elyra crashes without the runtime dir)."""
    home = tmp_path / "jupyter"
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime")):
        (home / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(home / sub))
    return home


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A folder with copies of the templates (and their data) and an empty pipelines/ folder."""
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "templates", ws / "templates")
    (ws / "pipelines").mkdir()
    shutil.copy(ROOT / "pipelines" / "flagship.yaml", ws / "pipelines" / "flagship.yaml")
    return ws


def make_notebook(path: Path, parameters: str, body: str) -> Path:
    """A small notebook with a ``parameters`` cell and one code cell, kernel python3."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), params, nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def write_spec(path: Path, spec: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def run_cli(capsys):
    """Run ``nbplugins ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def invoke(*args: str) -> tuple[int, str, str]:
        code = 0
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


def elyra_pipeline(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The real ``elyra-pipeline`` CLI."""
    return subprocess.run([str(VENV_BIN / "elyra-pipeline"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture
def moto(tmp_path) -> Iterator[harness.ServerProcess]:
    """A moto S3 server on 127.0.0.1 (Elyra uploads node archives there during export)."""
    server = harness.start("moto", [harness.venv_bin("moto_server"), "-H", "127.0.0.1", "-p", "{port}"],
                           log_dir=tmp_path / "moto-log")
    yield server
    server.stop()
