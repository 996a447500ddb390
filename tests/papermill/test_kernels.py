"""Kernels at scale: hundreds of runs in one process leave no descriptor, thread, event loop or
ZeroMQ socket behind; the run deadline stops a kernel; the jobs ceiling is said."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbplugins.errors import ExecutionError
from nbplugins.papermill import kernels
from nbplugins.papermill.engine import execute
from tests.papermill import notebooks


@pytest.fixture
def light(tmp_path) -> Path:
    return notebooks.write(tmp_path / "tpl" / "light.ipynb", "n = 0", "from nbplugins import scraps\nscraps.glue('n2', n * 2)")


# Counted in a fresh interpreter: other tests of this session leave threads and sockets
# (a Dask client, servers) that come and go on their own schedule.
PROBE = """
import json, os, sys, threading
from pathlib import Path
from nbplugins import sweep
from nbplugins.papermill import kernels
from nbplugins.papermill.engine import execute

light, work, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
level = lambda: (len(os.listdir("/proc/self/fd")), threading.active_count())

def sweep_of(name, count):
    runs = sweep.plan(str(light), [{"n": i} for i in range(count)], str(work / name / "{n}.ipynb"))
    samples = {}
    for event in sweep.execute_runs(light, runs, jobs=2, report_dir=work / f"{name}-report"):
        assert event.kind != "failed", event.message
        if event.kind == "finished" and event.payload.index in (100, count - 50):
            samples[event.payload.index] = level()
    assert [r.values["n2"] for r in runs] == [2 * i for i in range(count)]
    return samples

if mode == "sweep":
    sweep_of("first", 20)  # brings up the process-wide parts: the kernel runtime, the fork server
    settled = level()
    samples = sweep_of("second", 300)  # past run 160, where a full pipe stopped every kernel
else:
    execute(light, work / "first.ipynb", {"n": 1})
    settled, samples = level(), {}
    for i in range(25):
        execute(light, work / f"o{i}.ipynb", {"n": i})
print(json.dumps({"settled": settled, "samples": samples, "after": level(), "live": len(kernels.runtime.live)}))
"""


def _probe(light: Path, tmp_path: Path, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(light), str(tmp_path), mode], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_hundreds_of_sweep_runs_leave_descriptors_and_threads_where_they_started(tmp_path, light):
    (tmp_path / "tmp").mkdir()
    seen = _probe(light, tmp_path, "sweep")
    samples, settled, after = seen["samples"], seen["settled"], seen["after"]
    # bounded while it runs: at run 250 no more descriptors than at run 100, give or take a run in flight
    assert samples["250"][0] <= samples["100"][0] + 12, samples
    assert after[0] <= settled[0] + 2, seen
    assert after[1] <= settled[1], seen
    assert seen["live"] == 0
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_engine_in_a_python_loop_leaves_nothing_behind(tmp_path, light):
    (tmp_path / "tmp").mkdir()
    seen = _probe(light, tmp_path, "engine")
    assert seen["after"][0] <= seen["settled"][0] + 2, seen
    assert seen["after"][1] <= seen["settled"][1], seen
    assert seen["live"] == 0
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_run_past_its_deadline_is_stopped_and_says_so(tmp_path):
    slow = notebooks.write(tmp_path / "slow.ipynb", "seconds = 60", "import time\ntime.sleep(seconds)")
    with pytest.raises(ExecutionError, match=r"stopped after the run's 2 s timeout"):
        execute(slow, tmp_path / "out.ipynb", timeout=2)
    assert (tmp_path / "out.ipynb").exists()  # the partial output is saved, as for any failure
    assert not kernels.runtime.live


def test_more_jobs_than_the_machine_holds_are_capped_and_said(caplog):
    with caplog.at_level(logging.WARNING, logger="nbplugins.papermill.kernels"):
        used = kernels.usable_jobs(100_000)
    assert 1 <= used <= 4 * (os.cpu_count() or 1)
    assert f"using -j {used}" in caplog.text and "-j 100000" in caplog.text
    assert kernels.usable_jobs(2) == 2 and kernels.usable_jobs(0) == 1


def test_kernels_start_under_a_temporary_folder_too_deep_for_socket_paths(tmp_path, light, monkeypatch):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr("tempfile.tempdir", str(deep))
    nb = execute(light, tmp_path / "out.ipynb", {"n": 4})
    assert nb.cells[-1].outputs[0].data["application/scrapbook.scrap.json+json"]["data"] == 8
    assert list(deep.iterdir()) == []
