"""Sweep at scale: N runs of a light template, ours against papermill, watched from outside.

(a) ``nbplugins sweep -j J`` over N runs;
(b) a loop over ``papermill.execute_notebook`` in one Python process (the peer a leak would
    show in too), over ``--api-runs`` of the runs;
(c) a shell loop of the papermill CLI over ``--cli-runs`` of them.

Each command's parent process is sampled every 0.25 s from /proc: open descriptors (the
highest and the last), peak RSS, and finished runs over time, so the runs per second of the
first and the last hundred are printed apart. The ratio is ours over each peer per run.
Checks that the three produced the same cell outputs where their runs overlap.
Usage: ``python benchmarks/sweep.py --runs 1000 [--jobs 2] [--api-runs 200] [--cli-runs 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "random_walk.ipynb"
BIN = Path(sys.executable).parent


@dataclass
class Watch:
    """What one command did, seen from outside."""

    label: str
    runs: int
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    max_fds: int = 0
    last_fds: int = 0
    finished_at: list[float] = field(default_factory=list)  # seconds since start, one per finished run

    def rate(self, first: bool, size: int = 100) -> float:
        """Runs per second over the first (or last) ``size`` runs."""
        times = sorted(self.finished_at)
        if len(times) < 2:
            return float("nan")
        size = min(size, len(times) - 1)
        if first:
            return size / (times[size] - 0.0) if times[size] else float("nan")
        return size / (times[-1] - times[-1 - size])


def outputs(path: Path) -> list:
    """The code cells' outputs, without execution counts or timing metadata."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    return [[{k: v for k, v in o.items() if k not in ("execution_count", "metadata")} for o in c.outputs]
            for c in cells]


def _status(pid: int) -> tuple[int, float]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return fds, hwm


def watch(label: str, runs: int, argv: list[str], progress: Callable[[], int], cwd: Path) -> Watch:
    """Run ``argv``; sample its descriptors, peak RSS and ``progress()`` (runs finished) until it ends."""
    result = Watch(label, runs)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = 0
    while proc.poll() is None:
        try:
            fds, hwm = _status(proc.pid)
            result.max_fds, result.last_fds = max(result.max_fds, fds), fds
            result.peak_rss_mib = max(result.peak_rss_mib, hwm)
        except (OSError, ValueError):
            pass
        done = progress()
        now = time.perf_counter() - start
        result.finished_at += [now] * max(0, done - seen)
        seen = max(seen, done)
        time.sleep(0.25)
    result.seconds = time.perf_counter() - start
    result.finished_at += [result.seconds] * max(0, progress() - seen)
    if proc.returncode:
        raise SystemExit(f"{label} failed with exit code {proc.returncode}")
    return result


def _lines(path: Path) -> Callable[[], int]:
    def count() -> int:
        try:
            return path.read_bytes().count(b"\n")
        except OSError:
            return 0
    return count


def _files(folder: Path) -> Callable[[], int]:
    return lambda: sum(1 for _ in folder.glob("*.ipynb"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--api-runs", type=int, default=200, help="runs of the papermill API loop")
    parser.add_argument("--cli-runs", type=int, default=20, help="runs of the papermill CLI loop")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbp-bench-scale-"))
    (work / "grid.yaml").write_text(f"seed: {json.dumps(list(range(args.runs)))}\nsteps: 200\n")
    for d in ("a", "b", "c"):
        (work / d).mkdir()
    print(f"{args.runs} runs of {TEMPLATE.name}, -j {args.jobs}, on {os.cpu_count()} cores", flush=True)

    ours = watch(f"(a) nbplugins sweep -j {args.jobs}", args.runs,
                 [str(BIN / "nbplugins"), "sweep", str(TEMPLATE), "--grid", str(work / "grid.yaml"),
                  "-o", str(work / "a" / "{seed}.ipynb"), "-j", str(args.jobs), "--force",
                  "--report-dir", str(work / "report"), "--max-runs", str(args.runs)],
                 _lines(work / "report" / "runs.jsonl"), work)
    ours.finished_at = ours.finished_at[:args.runs]
    api_code = (
        "import sys, papermill as pm\n"
        f"for s in range({args.api_runs}):\n"
        f"    pm.execute_notebook({str(TEMPLATE)!r}, {str(work / 'b')!r} + f'/{{s}}.ipynb', "
        "parameters={'seed': s, 'steps': 200}, progress_bar=False)\n"
        f"    print(s, file=open({str(work / 'b.log')!r}, 'a'))\n"
    )
    api = watch("(b) loop over papermill.execute_notebook", args.api_runs, [sys.executable, "-c", api_code],
                _lines(work / "b.log"), TEMPLATE.parent)
    cli_script = "; ".join(
        f"{BIN / 'papermill'} --no-progress-bar {TEMPLATE} {work / 'c' / f'{s}.ipynb'} -p seed {s} -p steps 200"
        for s in range(args.cli_runs))
    cli = watch("(c) shell loop of the papermill CLI", args.cli_runs, ["bash", "-c", cli_script],
                _files(work / "c"), TEMPLATE.parent)

    state = json.loads((work / "report" / "sweep.json").read_text())
    failed = sum(1 for r in state["runs"] if r["status"] != "ok")
    print(f"\n{'':44} {'runs':>5} {'wall s':>8} {'s/run':>7} {'first100/s':>10} {'last100/s':>10} "
          f"{'peak MiB':>9} {'fds max':>8} {'fds end':>8}")
    for w in (ours, api, cli):
        print(f"{w.label:<44} {w.runs:>5} {w.seconds:>8.1f} {w.seconds / w.runs:>7.3f} {w.rate(True):>10.2f} "
              f"{w.rate(False):>10.2f} {w.peak_rss_mib:>9.0f} {w.max_fds:>8} {w.last_fds:>8}")
    per_run = ours.seconds / ours.runs
    print(f"\nours: {args.runs - failed} ok, {failed} failed; last hundred at "
          f"{ours.rate(False) / ours.rate(True):.2f}x the pace of the first")
    print(f"per-run ratio: API loop / ours = {api.seconds / api.runs / per_run:.1f}x, "
          f"CLI loop / ours = {cli.seconds / cli.runs / per_run:.1f}x")
    same = all(outputs(work / "a" / f"{s}.ipynb") == outputs(work / "b" / f"{s}.ipynb")
               == outputs(work / "c" / f"{s}.ipynb") for s in range(min(args.cli_runs, args.api_runs, args.runs)))
    print(f"same cell outputs where the three overlap: {same}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed or not same else 0


if __name__ == "__main__":
    sys.exit(main())
