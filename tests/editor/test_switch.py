"""`nbplugins elyra enable | disable | status`: a Jupyter config file in the environment's config
folder switches the local runtime of the editor and of `elyra-pipeline run`; installing
nbplugins alone changes nothing; a filter set before is restored; bad states are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbplugins.editor import switch
from nbplugins.errors import ConfigError
from tests.editor.conftest import make_workspace
from tests.servers import harness


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    """A private Jupyter config folder that is the only one on the config path."""
    path = tmp_path / "jupyter-config"
    path.mkdir()
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(path))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", "")
    monkeypatch.delenv(switch.ENV, raising=False)
    monkeypatch.setattr("jupyter_core.paths.ENV_CONFIG_PATH", [str(tmp_path / "env-etc")])
    monkeypatch.setattr("jupyter_core.paths.SYSTEM_CONFIG_PATH", [])
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([harness.venv_bin("nbplugins"), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_installing_nbplugins_alone_keeps_elyras_local_runtime(config_dir):
    state = switch.status()
    assert state.active == "elyra" and "no runtimes filter" in state.why
    assert "nbplugins" in switch.installed_processors() and "local" in switch.installed_processors()


def test_enable_writes_the_filter_status_explains_it_and_disable_removes_it(config_dir):
    state = switch.enable(config_dir)
    assert state.active == "nbplugins" and str(config_dir / switch.CONFIG_FILE) in state.why
    data = json.loads((config_dir / switch.CONFIG_FILE).read_text())
    runtimes = data["PipelineProcessorRegistry"]["runtimes"]
    assert "nbplugins" in runtimes and "local" not in runtimes and {"kfp", "airflow"} <= set(runtimes)
    assert switch.enable(config_dir).active == "nbplugins"  # twice is the same
    state = switch.disable(config_dir)
    assert state.active == "elyra" and not (config_dir / switch.CONFIG_FILE).exists()


def test_disable_restores_the_filter_that_was_there_and_keeps_other_settings(config_dir):
    mine = {"PipelineProcessorRegistry": {"runtimes": ["local", "kfp"]}, "ComponentCache": {"max_readers": 2}}
    (config_dir / switch.CONFIG_FILE).write_text(json.dumps(mine))
    assert switch.status().active == "elyra"
    assert switch.enable(config_dir).runtimes == ["kfp", "nbplugins"]
    switch.disable(config_dir)
    assert json.loads((config_dir / switch.CONFIG_FILE).read_text()) == mine


def test_a_broken_config_file_is_refused_and_left_alone(config_dir):
    (config_dir / switch.CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        switch.enable(config_dir)
    assert (config_dir / switch.CONFIG_FILE).read_text() == "{not json"


def test_the_cli_says_which_runtime_is_active_and_why(tmp_path):
    env = {"JUPYTER_CONFIG_DIR": str(tmp_path), "JUPYTER_CONFIG_PATH": "", switch.ENV: ""}
    done = cli("elyra", "enable", "--config-dir", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    assert "local runtime: nbplugins" in done.stdout and "restart JupyterLab" in done.stderr
    done = cli("elyra", "status", env=env)
    assert "local runtime: nbplugins" in done.stdout and "why:" in done.stdout
    done = cli("elyra", "disable", "--config-dir", str(tmp_path), env=env)
    assert done.returncode == 0 and "local runtime: Elyra's own" in done.stdout


def test_enable_without_elyra_says_how_to_install_the_extra(tmp_path):
    target = tmp_path / "config"
    target.mkdir()
    code = ("import sys; sys.modules['elyra'] = None\nfrom nbplugins.cli import main\n"
            f"main(['elyra', 'enable', '--config-dir', {str(target)!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Elyra is not installed" in done.stderr and "pip install 'nbplugins[elyra]'" in done.stderr
    assert "Traceback" not in done.stderr and not list(target.iterdir())


@pytest.mark.timeout(300)
def test_elyra_pipeline_run_follows_the_switch(tmp_path):
    """elyra-pipeline reads no Jupyter config: the processor itself follows the file."""
    ws = make_workspace(tmp_path / "ws")
    env = dict(os.environ, PYTHONWARNINGS="ignore", NBP_EDITOR_CANARY="x-canary-value", **{switch.ENV: ""})
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "rt")):
        (tmp_path / sub).mkdir()
        env[var] = str(tmp_path / sub)
    env["JUPYTER_CONFIG_PATH"] = ""
    assert cli("elyra", "enable", "--config-dir", env["JUPYTER_CONFIG_DIR"], env=env).returncode == 0
    bin_dir = Path(harness.venv_bin("elyra-pipeline")).parent
    run = subprocess.run([str(bin_dir / "elyra-pipeline"), "run", "work/pair.pipeline"], cwd=ws, env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pair: 3 succeeded" in run.stderr and "report.html" in run.stderr
    assert len(list((ws / "runs").glob("pair-*"))) == 1
