"""Kernels forked from the fork server behave like freshly started ones; their exit codes and
liveness come from the server, their parent; where forking is not supported they start normally."""

from __future__ import annotations

import builtins
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from nbplugins import forkserver, scraps
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


def _send(km, code: str) -> None:
    """Run ``code`` in a started kernel without waiting for it to finish."""
    from jupyter_client.blocking import BlockingKernelClient

    kc = BlockingKernelClient()
    kc.load_connection_info(km.get_connection_info())
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        kc.execute(code)
    finally:
        kc.stop_channels()


def _exit_code(km, timeout: float = 60) -> int:
    """The kernel's exit code, once the provisioner reports one."""
    deadline = time.monotonic() + timeout
    while (code := kernels.runtime.call(km.provisioner.poll())) is None:
        assert time.monotonic() < deadline, "the kernel did not exit"
        time.sleep(0.05)
    return code


def test_a_forked_kernel_reports_its_real_exit_code_and_is_dead_once_it_exits(tmp_path):
    with kernels.KernelPool("python3", size=2, total=2, cwd=str(tmp_path), env=dict(os.environ)) as pool:
        assert pool.fork
        exits, killed = pool.take(), pool.take()
        try:
            assert isinstance(exits.provisioner, forkserver.ForkProvisioner) and kernels.is_alive(exits)
            _send(exits, "import os\nos._exit(3)")
            assert _exit_code(exits) == 3
            assert not kernels.is_alive(exits)
            assert kernels.runtime.call(exits.provisioner.wait()) == 3
            kernels.runtime.call(killed.provisioner.kill())  # a signal through the server, the kernels' parent
            assert _exit_code(killed) == -signal.SIGKILL and not kernels.is_alive(killed)
        finally:
            kernels.stop_kernel(exits)
            kernels.stop_kernel(killed)


def test_forked_kernels_are_alive_where_proc_cannot_be_read(tmp_path, monkeypatch):
    real_open, real_read = builtins.open, Path.read_text

    def no_proc_open(file, *args, **kwargs):
        if str(file).startswith("/proc"):
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)

    def no_proc_read(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise FileNotFoundError(path)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc_open)
    monkeypatch.setattr(Path, "read_text", no_proc_read)
    nb = notebooks.write(tmp_path / "probe.ipynb", None, PROBE)
    with kernels.KernelPool("python3", size=1, total=1, cwd=str(tmp_path), env=dict(os.environ)) as pool:
        km = pool.take()
        assert pool.fork and kernels.is_alive(km)
        values = scraps.read(execute(nb, tmp_path / "o.ipynb", km=km, credentials={}))
        assert values["ppid"] == pool.server.proc.pid


def test_where_kernels_cannot_be_forked_the_pool_starts_them_normally(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "fork")  # as on a platform without fork()
    assert not forkserver.supported()
    assert forkserver.start_server("python3", dict(os.environ)) is None
    nb = notebooks.write(tmp_path / "probe.ipynb", None, PROBE)
    with kernels.KernelPool("python3", size=1, total=1, cwd=str(tmp_path), env=dict(os.environ)) as pool:
        assert not pool.fork and pool.server is None
        values = scraps.read(execute(nb, tmp_path / "o.ipynb", km=pool.take(), credentials={}))
    assert values["ppid"] == os.getpid() and values["fresh"]


def test_the_fork_provisioner_starts_a_kernel_normally_when_no_server_runs_for_it(tmp_path, monkeypatch):
    from jupyter_client.manager import AsyncKernelManager

    class Routed(forkserver.LeanKernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            spec = super().get_kernel_spec(kernel_name)
            spec.metadata = {**spec.metadata, "kernel_provisioner": {"provisioner_name": forkserver.PROVISIONER}}
            return spec

    monkeypatch.setattr(forkserver.ForkProvisioner, "servers", {})
    directory = kernels.socket_directory()
    km = AsyncKernelManager(kernel_name="python3", transport="ipc", kernel_spec_manager=Routed(),
                            connection_file=os.path.join(directory, f"kernel-{uuid.uuid4().hex[:12]}.json"),
                            context=kernels.runtime.context)
    kernels.runtime.call(kernels.runtime.start(km, str(tmp_path), dict(os.environ)))
    try:
        assert isinstance(km.provisioner, forkserver.ForkProvisioner) and kernels.is_alive(km)
        _send(km, "import os\nos._exit(3)")
        assert _exit_code(km) == 3 and not kernels.is_alive(km)
    finally:
        kernels.stop_kernel(km)
