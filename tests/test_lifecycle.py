"""Runs end cleanly: SIGINT, SIGTERM and SIGHUP stop sweeps and pipelines within seconds, leave no
kernel, temporary file or token behind, and record the run as interrupted; a killed sweep
resumes where it stopped; per-run timeouts; the papermill CLI's own timeouts and output files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbplugins.pipelines import spec
from tests.papermill import notebooks

SLOW = "import time\nfrom nbplugins import scraps\ntime.sleep(seconds)\nscraps.glue('slept', seconds)"


def _start(args: list[str], cwd: Path, tmp: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "nbplugins", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp), **env})


def _wait_for(check, seconds: float = 120, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            if proc is not None:
                proc.kill()
                pytest.fail(f"timed out waiting; the command said: {proc.communicate()[1][-2000:]}")
            pytest.fail("timed out waiting")
        time.sleep(0.2)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for p, pp in zip(out[::2], out[1::2], strict=True):
        children.setdefault(int(pp), []).append(int(p))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.fixture
def tmp() -> Iterator[Path]:
    """The commands' TMPDIR, short like a real one (kernel socket paths must fit 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="nbp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def slow(tmp_path) -> Path:
    return notebooks.write(tmp_path / "tpl" / "slow.ipynb", "seconds = 600", SLOW)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_stops_a_sweep_within_seconds_and_leaves_nothing(tmp_path, tmp, slow, make_jwt, canary, signum, code):
    token = make_jwt(jti=canary)
    (tmp_path / "grid.yaml").write_text("seconds: [0, 600, 601, 602]\n")
    proc = _start(["sweep", str(slow), "--grid", "grid.yaml", "-o", "out/{seconds}.ipynb", "-j", "2"],
                  tmp_path, tmp, OIDC_ACCESS_TOKEN=token)
    _wait_for(lambda: (tmp_path / "out" / "0.ipynb").exists() and (tmp_path / "out" / "600.ipynb").exists(),
              proc=proc)
    time.sleep(1)  # the long runs are in their cells now
    helpers = _descendants(proc.pid)
    assert helpers  # the fork server and the kernels
    sent = time.monotonic()
    os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 15
    assert proc.returncode == code, err
    assert "Traceback" not in err and "interrupted" in err
    _wait_for(lambda: not _alive(helpers), 10)
    assert list(tmp.iterdir()) == []  # token file, connection files, fork server socket: all gone
    state = json.loads((tmp_path / "sweep-slow" / "sweep.json").read_text())
    assert state["status"] == "interrupted"
    assert [r["parameters"]["seconds"] for r in state["runs"] if r["status"] == "ok"] == [0]
    for path in [*tmp_path.rglob("*.ipynb"), *tmp_path.rglob("*.json")]:
        assert canary not in path.read_text()


def test_ctrl_c_at_a_terminal_prints_no_fork_server_traceback(tmp_path, tmp, slow):
    (tmp_path / "grid.yaml").write_text("seconds: [600]\n")
    proc = _start(["sweep", str(slow), "--grid", "grid.yaml", "-o", "out/{seconds}.ipynb"], tmp_path, tmp)
    _wait_for(lambda: (tmp_path / "out" / "600.ipynb").exists(), proc=proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_a_killed_sweep_resumes_with_only_the_runs_that_did_not_finish(tmp_path, tmp):
    quick = notebooks.write(tmp_path / "tpl" / "quick.ipynb", "n = 0",
                            "from nbplugins import scraps\nscraps.glue('n2', n * 2)")
    (tmp_path / "grid.yaml").write_text(f"n: {list(range(40))}\n")
    args = ["sweep", str(quick), "--grid", "grid.yaml", "-o", "out/{n}.ipynb", "-j", "2"]
    proc = _start(args, tmp_path, tmp)
    journal = tmp_path / "sweep-quick" / "runs.jsonl"
    _wait_for(lambda: journal.exists() and journal.read_text().count("\n") >= 12, proc=proc)
    os.killpg(proc.pid, signal.SIGKILL)  # no clean-up at all: the machine was culled
    proc.communicate()
    finished = journal.read_text().count('"status": "ok"')
    again = subprocess.run([sys.executable, "-m", "nbplugins", *args], cwd=tmp_path, capture_output=True,
                           text=True, env={**os.environ, "TMPDIR": str(tmp)}, timeout=600)
    assert again.returncode == 0, again.stderr
    ok, skipped = (int(again.stdout.split(" ok")[0]), int(again.stdout.split(" failed, ")[1].split()[0]))
    assert skipped >= finished >= 12 and ok + skipped == 40, again.stdout
    import pandas as pd

    table = pd.read_csv(tmp_path / "sweep-quick" / "summary.csv")
    assert sorted(table["n"]) == list(range(40)) and set(table["value.n2"]) == {2 * n for n in range(40)}
    assert not journal.exists()  # compacted into sweep.json


def test_sweep_timeout_fails_the_slow_run_and_keeps_the_others(tmp_path, tmp, slow):
    (tmp_path / "grid.yaml").write_text("seconds: [0, 600, 1]\n")
    result = subprocess.run([sys.executable, "-m", "nbplugins", "sweep", str(slow), "--grid", "grid.yaml",
                             "-o", "out/{seconds}.ipynb", "--timeout", "5"], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "TMPDIR": str(tmp)}, timeout=120)
    assert result.returncode == 1
    assert "2 ok, 1 failed" in result.stdout
    assert "stopped after the run's 5 s timeout" in result.stderr
    assert list(tmp.iterdir()) == []


def test_pipeline_sigterm_marks_the_run_interrupted_and_node_timeout_stops_a_node(tmp_path, tmp, slow):
    (tmp_path / "p.yaml").write_text(
        "name: p\nruntime_image: quay.io/jupyter/minimal-notebook:latest\nnodes:\n"
        f"  quick:\n    notebook: {slow}\n    parameters: {{seconds: 0}}\n"
        f"  bounded:\n    notebook: {slow}\n    parameters: {{seconds: 600}}\n    timeout: 3\n"
        f"  long:\n    notebook: {slow}\n    parameters: {{seconds: 600}}\n    after: [quick]\n")
    built = spec.build(tmp_path / "p.yaml", tmp_path / "p.pipeline")
    proc = _start(["pipeline", "run", str(built), "--run-dir", "run", "-q"], tmp_path, tmp)
    record = tmp_path / "run" / "run.json"

    def status(node: str) -> str:
        try:
            return json.loads(record.read_text())["nodes"][node]["status"]
        except (OSError, ValueError):
            return ""

    _wait_for(lambda: status("bounded") == "failed" and status("long") == "running", proc=proc)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "--resume --run-dir" in err and "Traceback" not in err
    run = json.loads(record.read_text())
    assert run["status"] == "interrupted"
    assert "stopped after the run's 3 s timeout" in run["nodes"]["bounded"]["error"]
    assert run["nodes"]["quick"]["status"] == "succeeded"
    assert list(tmp.iterdir()) == []


def test_papermill_cli_honours_its_timeouts_and_scrubs_its_output_files(tmp_path, tmp, make_jwt, canary):
    token = make_jwt(jti=canary)
    nb = notebooks.write(tmp_path / "nb.ipynb", "seconds = 0",
                         "import os, sys\nprint(os.environ['OIDC_ACCESS_TOKEN'])\n"
                         "print(os.environ['OIDC_ACCESS_TOKEN'], file=sys.stderr)",
                         "import time\ntime.sleep(seconds)")
    papermill = [str(Path(sys.executable).parent / "papermill"), "--engine", "nbplugins", "--no-progress-bar"]
    env = {**os.environ, "TMPDIR": str(tmp), "OIDC_ACCESS_TOKEN": token}
    ok = subprocess.run([*papermill, str(nb), str(tmp_path / "ok.ipynb"), "--log-output",
                         "--stdout-file", str(tmp_path / "out.txt"), "--stderr-file", str(tmp_path / "err.txt")],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    for name in ("out.txt", "err.txt", "ok.ipynb"):
        text = (tmp_path / name).read_text()
        assert canary not in text and "***" in text, name
    assert canary not in ok.stdout + ok.stderr
    slow = subprocess.run([*papermill, str(nb), str(tmp_path / "slow.ipynb"), "-p", "seconds", "600",
                           "--execution-timeout", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert slow.returncode != 0 and "Timeout" in slow.stderr
    assert list(tmp.iterdir()) == []


def test_a_failure_before_the_first_run_leaves_no_fork_server_behind(tmp_path, tmp, slow):
    for _ in range(3):
        done = subprocess.run([sys.executable, "-m", "nbplugins", "sweep", str(slow), "--grid", "missing.yaml",
                               "-o", "out/{seconds}.ipynb"], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "TMPDIR": str(tmp)}, timeout=120)
        assert done.returncode == 1 and "missing.yaml" in done.stderr and "Traceback" not in done.stderr
    _wait_for(lambda: not list(tmp.iterdir()), 10)  # a server still starting removes its own folder


def test_a_grid_past_the_ceiling_is_refused_with_its_count_unless_raised(tmp_path, tmp, slow):
    (tmp_path / "grid.yaml").write_text(f"seconds: {list(range(1000))}\nother: {list(range(1000))}\n")
    done = subprocess.run([sys.executable, "-m", "nbplugins", "sweep", str(slow), "--grid", "grid.yaml",
                           "-o", "out/{index}.ipynb", "--allow-unknown"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "TMPDIR": str(tmp)}, timeout=120)
    assert done.returncode == 1
    assert "makes 1,000,000 runs (1000 x 1000), more than the ceiling of 10,000" in done.stderr
    assert "--max-runs 1000000" in done.stderr and not (tmp_path / "out").exists()
