"""Benchmark: `elyra-pipeline run` against `nbplugins pipeline run -j 2` on the same 6-node pipeline.

The pipeline is a diamond (a -> b, c -> d) plus two independent nodes (e, f); every node is a
small notebook with a 2 s step. Both tools run the same .pipeline file, built here from a
YAML spec, in the same process run, each in a fresh copy of the workspace (Elyra executes
notebooks in place). Prints both wall times and their ratio (target: at most 0.4).

    .venv/bin/python benchmarks/pipeline.py [--jobs 2] [--step 2.0]
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

import nbformat  # noqa: E402
import yaml  # noqa: E402

from nbplugins.pipelines import spec  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--step", type=float, default=2.0, help="seconds each node sleeps")
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
        print(f"ratio nbplugins / elyra:            {ratio:6.2f}x (target <= 0.40x)")
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
