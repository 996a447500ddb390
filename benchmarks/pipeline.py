"""Benchmark: Elyra's local runtime against nbplugins' on the same 6-node pipeline, two ways.

The pipeline is a diamond (a -> b, c -> d) plus two independent nodes (e, f); every node is a
small notebook with a 2 s step. The same .pipeline file, built here from a YAML spec, runs in
one process run, each time in a fresh copy of the workspace (Elyra executes notebooks in place):

* command line: `elyra-pipeline run` against `nbplugins pipeline run -j 2`;
* editor: the Run button's request (`POST /elyra/pipeline/schedule`) to a Jupyter server with
  Elyra, once with `nbplugins elyra enable` (nbplugins' processor, 2 nodes at once) and once
  without (Elyra's own processor). Server start-up is not timed.

Prints the wall times and the ratios (target: at most 0.4).

    .venv/bin/python benchmarks/pipeline.py [--jobs 2] [--step 2.0] [--no-editor]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import json  # noqa: E402
import secrets  # noqa: E402

import nbformat  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from nbplugins.pipelines import spec  # noqa: E402
from tests.servers import harness  # noqa: E402

BIN = Path(sys.executable).parent
EDGES = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": [], "f": []}


def notebook(path: Path, step: float) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(f"step = {step}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import time\ntime.sleep(step)\nprint('done')")]
    nbformat.write(nb, str(path))


def workspace(root: Path, step: float) -> Path:
    root.mkdir(parents=True)
    for name in EDGES:
        notebook(root / f"{name}.ipynb", step)
    nodes = {n: {"notebook": f"{n}.ipynb", **({"after": p} if p else {})} for n, p in EDGES.items()}
    (root / "bench.yaml").write_text(yaml.safe_dump({"name": "bench", "runtime_image": "owner/image:tag",
                                                     "nodes": nodes}, sort_keys=False))
    return spec.build(root / "bench.yaml")


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def start_lab(root: Path, jupyter: Path, env: dict[str, str], *, enabled: bool, jobs: int
              ) -> tuple[harness.ServerProcess, str]:
    """A Jupyter server with Elyra on 127.0.0.1 serving ``root``; nbplugins enabled or not."""
    env = dict(env, ELYRA_PROCESSOR_RUNTIMES="", JUPYTER_CONFIG_PATH="")
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "rt")):
        (jupyter / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(jupyter / sub)
    if enabled:
        done = subprocess.run([str(BIN / "nbplugins"), "elyra", "enable", "--config-dir", env["JUPYTER_CONFIG_DIR"]],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"nbplugins elyra enable failed:\n{done.stdout}{done.stderr}")
    token = secrets.token_hex(16)
    port = harness.free_port()
    server = harness.start("bench-lab", [str(BIN / "jupyter"), "lab", "--no-browser", "--allow-root",
                                         f"--ServerApp.token={token}", "--port", "{port}", "--ServerApp.ip=127.0.0.1",
                                         f"--ServerApp.root_dir={root}", f"--NbpluginsProcessor.jobs={jobs}"],
                           port=port, env=env, timeout=120, log_dir=jupyter / "log",
                           ready=harness.http_ready(f"http://127.0.0.1:{port}/api/status"))
    url = f"http://127.0.0.1:{port}/"
    headers = {"Authorization": f"token {token}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if requests.get(url + "elyra/metadata/runtime-images", headers=headers, timeout=10).status_code == 200:
            return server, token
        time.sleep(0.5)
    server.stop()
    sys.exit("Elyra did not answer")


def schedule(server: harness.ServerProcess, token: str, root: Path, pipeline: Path) -> float:
    """Time the editor's Run request for ``pipeline`` (paths relative to the server root, as the editor sends)."""
    doc = json.loads(pipeline.read_text())
    primary = doc["pipelines"][0]
    for node in primary["nodes"]:
        params = node["app_data"]["component_parameters"]
        params["filename"] = os.path.relpath(pipeline.parent / params["filename"], root)
    primary["app_data"].update({"source": pipeline.name, "name": pipeline.stem, "runtime_config": None})
    start = time.perf_counter()
    answer = requests.post(f"http://127.0.0.1:{server.port}/elyra/pipeline/schedule", json=doc,
                           headers={"Authorization": f"token {token}"}, timeout=600)
    elapsed = time.perf_counter() - start
    if answer.status_code != 200:
        sys.exit(f"schedule answered {answer.status_code}: {answer.text[:2000]}")
    return elapsed


def editor(tmp_path: Path, env: dict[str, str], step: float, jobs: int) -> list[tuple[float, float]]:
    """[(first, second) Run request wall times] for Elyra's processor, then nbplugins'."""
    times = []
    for enabled in (False, True):
        name = "nbplugins" if enabled else "elyra"
        root = tmp_path / f"editor-{name}"
        pipeline = workspace(root / "work", step)
        server, token = start_lab(root, tmp_path / f"jupyter-{name}", env, enabled=enabled, jobs=jobs)
        try:
            first = schedule(server, token, root, pipeline)  # pays the server's first imports
            times.append((first, schedule(server, token, root, pipeline)))
        finally:
            server.stop()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--step", type=float, default=2.0, help="seconds each node sleeps")
    parser.add_argument("--no-editor", action="store_true", help="Skip the editor (Jupyter server) comparison.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbp-bench-") as tmp:
        tmp_path = Path(tmp)
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                         ("JUPYTER_RUNTIME_DIR", "runtime")):
            (tmp_path / "jupyter" / sub).mkdir(parents=True)
            env[var] = str(tmp_path / "jupyter" / sub)
        elyra_pipeline = workspace(tmp_path / "elyra", args.step)
        ours = workspace(tmp_path / "nbplugins", args.step)
        print(f"6-node pipeline (diamond a->b,c->d plus e, f), {args.step:.1f} s step per node", flush=True)
        t_elyra = timed([str(BIN / "elyra-pipeline"), "run", elyra_pipeline.name], elyra_pipeline.parent, env)
        print(f"elyra-pipeline run:                 {t_elyra:6.1f} s", flush=True)
        t_ours = timed([str(BIN / "nbplugins"), "pipeline", "run", ours.name, "-j", str(args.jobs), "-q",
                        "--run-dir", str(tmp_path / "run")], ours.parent, env)
        print(f"nbplugins pipeline run -j {args.jobs}:        {t_ours:6.1f} s", flush=True)
        ratio = t_ours / t_elyra
        print(f"ratio nbplugins / elyra:            {ratio:6.2f}x (target <= 0.40x)", flush=True)
        if not args.no_editor:
            (e1, e2), (o1, o2) = editor(tmp_path, env, args.step, args.jobs)
            print(f"editor Run, Elyra's processor:      {e1:6.1f} s first, {e2:6.1f} s second", flush=True)
            print(f"editor Run, nbplugins (-j {args.jobs}):      {o1:6.1f} s first, {o2:6.1f} s second", flush=True)
            print(f"ratio nbplugins / elyra (editor):   {o1 / e1:6.2f}x first, {o2 / e2:6.2f}x second "
                  "(target <= 0.40x)")
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
