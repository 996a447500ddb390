"""Fixtures for the editor tests: a real Jupyter server with the Elyra extension on 127.0.0.1
(nbplugins enabled through the config file `nbplugins elyra enable` writes, or not), a workspace
of templates and small notebooks, and requests as the editor sends them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from nbplugins.editor import switch
from nbplugins.pipelines import spec
from tests.pipelines.conftest import make_notebook
from tests.servers import harness, jupyterhub

ROOT = Path(__file__).resolve().parents[2]
CANARY_VAR = "NBP_EDITOR_CANARY"  # the server's environment holds the canary; nodes reference it


@dataclass
class Lab:
    """A running Jupyter server with Elyra: where it is, its token, root folder and log."""

    process: harness.ServerProcess
    url: str  # http://127.0.0.1:PORT/
    token: str
    root: Path
    config_dir: Path
    canary: str

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": f"token {self.token}"}, timeout=60, **kwargs)

    def post(self, path: str, body: object, timeout: float = 300) -> requests.Response:
        return requests.post(self.url + path, json=body, headers={"Authorization": f"token {self.token}"},
                             timeout=timeout)

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


def make_workspace(root: Path) -> Path:
    """Templates and pipelines of the repository, plus small notebooks for the overlap/canary pipeline."""
    shutil.copytree(ROOT / "templates", root / "templates")
    (root / "pipelines").mkdir(parents=True)
    for name in ("stage_analyse_publish.yaml", "stage_analyse_publish.pipeline"):
        shutil.copy(ROOT / "pipelines" / name, root / "pipelines" / name)
    shout = ("import os, time\nsecret = os.environ['SERVICE_TOKEN']\nprint('token is', secret)\n"
             "time.sleep(pause)\nopen(out, 'w').write(f'{label} {scale}\\n')")
    for name in ("left", "right"):
        make_notebook(root / "work" / f"{name}.ipynb", f"pause = 0.1\nout = 'x.txt'\nlabel = '{name}'\nscale = 1", shout)
    make_notebook(root / "work" / "join.ipynb", "scale = 1", "print(open('left.txt').read(), open('right.txt').read())")
    (root / "work" / "pair.yaml").write_text(yaml.safe_dump({
        "name": "pair", "runtime_image": "owner/image:tag",
        "env": {"SERVICE_TOKEN": f"@env:{CANARY_VAR}"},
        "parameters": {"scale": {"default": 3}},
        "nodes": {
            "left": {"notebook": "left.ipynb", "parameters": {"pause": 1.5, "out": "left.txt", "scale": "${scale}"},
                     "outputs": ["left.txt"]},
            "right": {"notebook": "right.ipynb", "parameters": {"pause": 1.5, "out": "right.txt"},
                      "outputs": ["right.txt"]},
            "join": {"notebook": "join.ipynb", "after": ["left", "right"]},
        }}, sort_keys=False))
    spec.build(root / "work" / "pair.yaml")
    return root


def start_lab(tmp: Path, *, enabled: bool) -> Lab:
    """``jupyter lab`` with Elyra on 127.0.0.1, private Jupyter dirs; nbplugins enabled or not."""
    home = tmp / "jupyter"
    dirs = {var: home / sub for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                                             ("JUPYTER_RUNTIME_DIR", "runtime"))}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    env = {var: str(path) for var, path in dirs.items()}
    env.update({"HOME": str(tmp / "home"), "PYTHONWARNINGS": "ignore", "JUPYTER_CONFIG_PATH": "",
                "ELYRA_PROCESSOR_RUNTIMES": ""})
    (tmp / "home").mkdir(exist_ok=True)
    canary = f"CANARY{uuid.uuid4().hex}"
    env[CANARY_VAR] = canary
    if enabled:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update({k: v for k, v in env.items() if k.startswith("JUPYTER_")})
        try:
            state = switch.enable(dirs["JUPYTER_CONFIG_DIR"])
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        assert state.active == "nbplugins", state.why
    root = make_workspace(tmp / "root")
    token = secrets.token_hex(16)
    argv = [harness.venv_bin("jupyter"), "lab", "--no-browser", f"--ServerApp.token={token}", "--port", "{port}",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
            "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True", "--allow-root"]
    port = harness.free_port()
    process = harness.start("jupyterlab-elyra", argv, port=port, env=env, timeout=120, log_dir=tmp / "log",
                            ready=harness.http_ready(f"http://127.0.0.1:{port}/api/status"))
    lab = Lab(process, f"http://127.0.0.1:{port}/", token, root, dirs["JUPYTER_CONFIG_DIR"], canary)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # Elyra's handlers answer once its extension loaded
        if lab.get("elyra/metadata/runtime-images").status_code == 200:
            return lab
        time.sleep(0.5)
    process.stop()
    raise RuntimeError(f"Elyra did not answer:\n{process.log()}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    """A Jupyter server with Elyra where `nbplugins elyra enable` made nbplugins the local runtime."""
    server = start_lab(tmp_path_factory.mktemp("lab-enabled"), enabled=True)
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def lab_elyra(tmp_path_factory) -> Iterator[Lab]:
    """The same server without the switch: Elyra's own local processor."""
    server = start_lab(tmp_path_factory.mktemp("lab-disabled"), enabled=False)
    yield server
    server.process.stop()


def editor_request(lab: Lab, pipeline: str, *, keep_ours: bool = False,
                   edit: Callable[[dict], None] | None = None) -> dict:
    """The JSON the editor's Run dialog posts for ``pipeline`` (a path under the server root).

    Like the editor: node paths relative to the root, ``source`` the file's base name, the name
    from the dialog, no runtime config (the local runtime). nbplugins' own app data is left out
    unless ``keep_ours``: the processor must read it back from the saved file.
    """
    path = lab.root / pipeline
    doc = json.loads(path.read_text())
    primary = doc["pipelines"][0]
    folder = path.parent
    for node in primary["nodes"]:
        params = node["app_data"]["component_parameters"]
        params["filename"] = os.path.relpath((folder / params["filename"]).resolve(), lab.root)
        if not keep_ours:
            node["app_data"].pop("nbplugins", None)
    if not keep_ours:
        primary["app_data"].pop("nbplugins", None)
    primary["app_data"].update({"source": path.name, "name": path.stem, "runtime_config": None})
    if edit is not None:
        edit(doc)
    return doc


def every_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def browser(tmp_path, monkeypatch) -> Iterator[object]:
    """Headless Chromium driven by selenium, with a fresh profile; skipped without chromium."""
    with jupyterhub.chromium(tmp_path, monkeypatch, window="1400,900") as driver:
        yield driver
