"""Sweep benchmark: N runs of a small template, three ways, in one run on this machine.

(a) a shell loop of the papermill CLI, (b) a Python loop over ``papermill.execute_notebook``,
(c) ``nbplugins sweep -j 2``. Prints wall seconds and the ratios, and checks that all three
produced the same cell outputs. Usage: ``python benchmarks/sweep.py [--runs 40] [--jobs 2]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "random_walk.ipynb"
BIN = Path(sys.executable).parent


def outputs(path: Path) -> list:
    """The code cells' outputs, without execution counts or timing metadata."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    return [[{k: v for k, v in o.items() if k not in ("execution_count", "metadata")} for o in c.outputs]
            for c in cells]


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:8.1f} s", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbp-bench-sweep-"))
    seeds = list(range(args.runs))
    (work / "grid.yaml").write_text(f"seed: {json.dumps(seeds)}\nsteps: 500\n")
    for d in ("a", "b", "c"):
        (work / d).mkdir()

    def cli_loop() -> None:
        script = "; ".join(
            f"{BIN / 'papermill'} --no-progress-bar {TEMPLATE} {work / 'a' / f'{s}.ipynb'} -p seed {s} -p steps 500"
            for s in seeds)
        subprocess.run(["bash", "-c", script], check=True, cwd=TEMPLATE.parent,
                       stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def api_loop() -> None:
        code = (
            "import papermill as pm\n"
            f"for s in {seeds!r}:\n"
            f"    pm.execute_notebook({str(TEMPLATE)!r}, {str(work / 'b')!r} + f'/{{s}}.ipynb', "
            "parameters={'seed': s, 'steps': 500}, progress_bar=False)\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=TEMPLATE.parent,
                       stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def ours() -> None:
        subprocess.run([str(BIN / "nbplugins"), "sweep", str(TEMPLATE), "--grid", str(work / "grid.yaml"),
                        "-o", str(work / "c" / "{seed}.ipynb"), "-j", str(args.jobs), "--force",
                        "--report-dir", str(work / "report")], check=True,
                       stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    print(f"{args.runs} runs of {TEMPLATE.name} on {Path('/proc/cpuinfo').read_text().count('processor')} cores")
    a = timed("(a) shell loop of the papermill CLI", cli_loop)
    b = timed("(b) Python loop over papermill.execute_notebook", api_loop)
    c = timed(f"(c) nbplugins sweep -j {args.jobs}", ours)
    same = all(outputs(work / "a" / f"{s}.ipynb") == outputs(work / "b" / f"{s}.ipynb")
               == outputs(work / "c" / f"{s}.ipynb") for s in seeds)
    print(f"per run: (a) {a / args.runs:.2f} s, (b) {b / args.runs:.2f} s, (c) {c / args.runs:.2f} s")
    print(f"ratio (a)/(c) = {a / c:.1f}x (target >= 6x); (b)/(c) = {b / c:.1f}x (target >= 2.5x)")
    print(f"same cell outputs in all three: {same}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
