"""Kernels forked from the fork server behave like freshly started ones."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nbplugins import scraps
from nbplugins.errors import ExecutionError
from nbplugins.papermill import kernels
from nbplugins.papermill.engine import execute
from tests.papermill import notebooks

PROBE = ("import os, random\nfrom nbplugins import scraps\n"
         "scraps.glue('ppid', os.getppid())\nscraps.glue('cwd', os.getcwd())\n"
         "scraps.glue('var', os.environ.get('PROBE_VAR'))\nscraps.glue('rand', random.random())\n"
         "scraps.glue('fresh', 'leftover' not in globals())\nleftover = 1")


def test_pool_kernels_are_forks_with_their_own_env_cwd_and_random_state(tmp_path):
    nb = notebooks.write(tmp_path / "probe.ipynb", None, PROBE)
    env = kernels.kernel_environment({"PROBE_VAR": "from-the-pool"}, {})
    with kernels.KernelPool("python3", size=2, total=3, cwd=str(tmp_path), env=env) as pool:
        server = pool.server
        assert pool.fork and server is not None
        server_pid = server.proc.pid
        values = [scraps.read(execute(nb, tmp_path / f"o{i}.ipynb", km=pool.take(), credentials={}))
                  for i in range(3)]
    assert all(v["ppid"] == server_pid for v in values)  # forked by the server, not started anew
    assert all(v["cwd"] == str(tmp_path) and v["var"] == "from-the-pool" and v["fresh"] for v in values)
    assert len({v["rand"] for v in values}) == 3  # each fork reseeded its random state
    assert server.proc.poll() is not None  # the server stopped with the pool


def test_a_forked_kernel_that_dies_is_reported_and_the_pool_goes_on(tmp_path):
    die = notebooks.write(tmp_path / "die.ipynb", None, "import os\nos._exit(7)")
    ok = notebooks.write(tmp_path / "ok.ipynb", None, "from nbplugins import scraps\nscraps.glue('ok', 1)")
    with kernels.KernelPool("python3", size=1, total=2, cwd=str(tmp_path), env=dict(os.environ)) as pool:
        with pytest.raises(ExecutionError, match="kernel died"):
            execute(die, tmp_path / "d.ipynb", km=pool.take(), credentials={})
        assert scraps.read(execute(ok, tmp_path / "k.ipynb", km=pool.take(), credentials={})) == {"ok": 1}


def test_pool_without_fork_starts_ordinary_kernels(tmp_path):
    nb = notebooks.write(tmp_path / "probe.ipynb", None, PROBE)
    with kernels.KernelPool("python3", size=1, total=1, cwd=str(tmp_path), env=dict(os.environ), fork=False) as pool:
        assert not pool.fork and pool.server is None
        values = scraps.read(execute(nb, tmp_path / "o.ipynb", km=pool.take(), credentials={}))
    assert values["ppid"] == os.getpid() and values["fresh"]


def test_a_server_prestarted_from_a_short_lived_thread_outlives_that_thread():
    import time

    from nbplugins import forkserver

    forkserver.prestart("python3")
    deadline = time.monotonic() + 60
    while not forkserver.ForkProvisioner.servers and time.monotonic() < deadline:
        time.sleep(0.05)
    with forkserver._starting:  # held until the server said it is ready
        server = next(iter(forkserver.ForkProvisioner.servers.values()))
    time.sleep(1.5)  # the starting thread is long gone
    try:
        assert server.proc.poll() is None
    finally:
        forkserver.stop_server(server)


LEAN_PROBE = """
import json, os, sys, tempfile
from pathlib import Path
legacy = Path(tempfile.mkdtemp()) / "kernels" / "legacy-kernel"
legacy.mkdir(parents=True)
(legacy / "kernel.json").write_text(json.dumps({"argv": ["python", "-m", "ipykernel_launcher", "-f",
                                                        "{connection_file}"], "display_name": "L", "language": "python"}))
os.environ["IPYTHONDIR"] = str(legacy.parent.parent)
from nbplugins.papermill import kernels
km = kernels.new_kernel_manager("python3", tempfile.mkdtemp(), fork=True)
assert km.kernel_spec.language == "python"
found = kernels.forkserver.LeanKernelSpecManager().find_kernel_specs()
assert "legacy-kernel" in found and "python3" in found, found
assert "IPython" not in sys.modules, "IPython was imported to find kernelspecs"
print("ok")
"""


def test_kernelspecs_are_found_where_jupyter_looks_without_importing_ipython():
    done = subprocess.run([sys.executable, "-c", LEAN_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
