"""A fork server for Python kernels: ipykernel is imported once, each kernel is a fork.

Starting a Python kernel costs about a second of CPU, nearly all of it importing IPython
and ipykernel. The fork server pays that once; each kernel is then a ``fork()`` of a process
that has imported those modules and nothing else: no user code has run, so every kernel
starts as fresh as a new process. jupyter_client sees an ordinary kernel through
:class:`ForkProvisioner` (entry point ``jupyter_client.kernel_provisioners``), so papermill
and nbclient drive it unchanged.

It lives outside ``nbplugins.papermill`` so the server imports neither papermill nor its
plugins. The server runs ``serve(SOCKET)`` in a new process of the kernelspec's
own interpreter and the pool's environment, and dies with the process that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.paths import jupyter_path
from traitlets import default

PROVISIONER = "nbplugins-fork"
LAUNCHER = ["-m", "ipykernel_launcher"]


# ----------------------------------------------------------------------------- server side


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _reap(*_: object) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become a fresh kernel process, never return."""
    try:
        os.setsid()
        _die_with_parent()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request.get("env") or {})
        import random

        random.seed()  # the fork copied the server's random state
        sys.argv = ["ipykernel_launcher", *request["args"]]
        from ipykernel.kernelapp import launch_new_instance

        launch_new_instance()
    except BaseException:  # noqa: S110 - a kernel that fails shows it on its own stderr
        import traceback

        traceback.print_exc()
    finally:
        os._exit(0)


def serve(path: str) -> None:
    """Preload ipykernel, then fork a kernel for each request on the Unix socket ``path``."""
    import ipykernel.kernelapp  # noqa: F401 - the point of the server
    import IPython  # noqa: F401

    parent = os.getppid()  # not PR_SET_PDEATHSIG: it fires when the starting *thread* ends
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent, which stops us
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(16)
    print("ready", flush=True)
    # the pipe that said "ready" is never read again: a kernel printing to it (ipykernel writes
    # its connection info at every start) would block once 64 KiB filled it, about 160 kernels in
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    server.settimeout(0.5)
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the process that started us is gone: leave nothing behind
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    os.rmdir(os.path.dirname(path))
                os._exit(0)
            continue
        conn.settimeout(None)
        with conn:
            request = json.loads(conn.makefile("r").readline())
            pid = os.fork()
            if pid == 0:
                server.close()
                conn.close()
                _child(request)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


# ----------------------------------------------------------------------------- client side


class ForkedProcess:
    """The parts of ``subprocess.Popen`` jupyter_client uses, for a process forked by the server."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            state = "X"
        if state in ("Z", "X"):
            self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.02)
        return self.returncode or 0

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """A running fork server for one interpreter; ``spawn`` returns a kernel's PID."""

    def __init__(self, python: str, flags: list[str], env: dict[str, str]) -> None:
        self.flags = flags  # interpreter flags of the kernelspec, given to the server too
        self.directory = tempfile.mkdtemp(prefix="nbplugins-fork-")
        if len(self.directory) > 90 and os.path.isdir("/tmp"):  # sun_path holds 108 bytes
            os.rmdir(self.directory)
            self.directory = tempfile.mkdtemp(prefix="nbplugins-fork-", dir="/tmp")
        os.chmod(self.directory, 0o700)
        self.path = os.path.join(self.directory, "fork.sock")
        self.proc = subprocess.Popen(
            [python, *flags, "-c", "import sys; from nbplugins.forkserver import serve; serve(sys.argv[1])",
             self.path], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if self.proc.stdout:
            self.proc.stdout.close()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError("the kernel fork server did not start")
        self.lock = threading.Lock()

    def spawn(self, args: list[str], cwd: str | None, env: dict[str, str]) -> int:
        with self.lock, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(self.path)
            sock.sendall(json.dumps({"args": args, "cwd": cwd, "env": env}).encode() + b"\n")
            return int(json.loads(sock.makefile("r").readline())["pid"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self.directory)


class ForkProvisioner(LocalProvisioner):  # type: ignore[misc]
    """A local provisioner whose kernels are forks of a :class:`ForkServer`."""

    servers: ClassVar[dict[str, ForkServer]] = {}

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        server = self.servers.get(cmd[0])
        at = _launcher_at(cmd)
        if server is None or at < 0 or cmd[1:at] != server.flags:
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        cwd = kwargs.get("cwd")
        pid = server.spawn(cmd[at + 2:], str(cwd) if cwd else None, env)
        self.process = ForkedProcess(pid)
        self.pid = self.pgid = pid
        self.cwd = cwd or Path.cwd()
        return self.connection_info


def _launcher_at(argv: list[str]) -> int:
    """Index of ``-m ipykernel_launcher`` in a kernel command (after interpreter flags), or -1."""
    for i in range(1, len(argv) - 1):
        if argv[i:i + 2] == LAUNCHER:
            return i
    return -1


def forkable(spec: KernelSpec) -> bool:
    """True for a Python kernelspec launched as ``python [flags] -m ipykernel_launcher ...``."""
    return spec.language.lower() == "python" and _launcher_at(spec.argv) > 0


def interpreter(spec: KernelSpec) -> str:
    """The interpreter jupyter_client will launch: a bare ``python`` means this one."""
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    return sys.executable if spec.argv[0] in bare else spec.argv[0]


class LeanKernelSpecManager(KernelSpecManager):
    """Kernelspecs where jupyter_client looks, found without importing IPython.

    jupyter_client imports IPython (1.4 s, in a parent that never runs IPython) only to name
    the legacy ``~/.ipython/kernels`` folder; this names it from ``IPYTHONDIR`` or the home.
    """

    @default("kernel_dirs")
    def _kernel_dirs_default(self) -> list[str]:
        ipython = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
        return [*jupyter_path("kernels"), os.path.join(ipython, "kernels")]


class ForkingKernelSpecManager(LeanKernelSpecManager):
    """Kernelspecs as installed, with forkable ones routed to the fork provisioner."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        spec = super().get_kernel_spec(kernel_name)
        if forkable(spec) and interpreter(spec) in ForkProvisioner.servers:
            spec.metadata = {**spec.metadata, "kernel_provisioner": {"provisioner_name": PROVISIONER}}
        return spec


_starting = threading.Lock()


def start_server(kernel_name: str, env: dict[str, str]) -> ForkServer | None:
    """Start (or reuse) the fork server for a kernelspec; None if it cannot be forked."""
    spec = LeanKernelSpecManager().get_kernel_spec(kernel_name)
    if not forkable(spec):
        return None
    python = interpreter(spec)
    with _starting:
        server = ForkProvisioner.servers.get(python)
        if server is None or server.proc.poll() is not None:
            server = ForkServer(python, spec.argv[1:_launcher_at(spec.argv)], env)
            ForkProvisioner.servers[python] = server
            atexit.register(stop_server, server)  # a command that fails before its first run
    return server


def prestart(kernel_name: str = "python3") -> None:
    """Start the fork server in the background now, while the caller is still importing."""

    def start() -> None:
        with contextlib.suppress(Exception):  # the pool falls back to ordinary kernels
            start_server(kernel_name, dict(os.environ))

    threading.Thread(target=start, daemon=True, name="nbplugins-fork-prestart").start()


def stop_server(server: ForkServer) -> None:
    for key, value in list(ForkProvisioner.servers.items()):
        if value is server:
            del ForkProvisioner.servers[key]
    server.close()

