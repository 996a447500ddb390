"""A fork server for Python kernels: ipykernel is imported once, each kernel is a fork.

Starting a Python kernel costs about a second of CPU, nearly all of it importing IPython
and ipykernel. The fork server pays that once; each kernel is then a ``fork()`` of a process
that has imported those modules and nothing else: no user code has run, so every kernel
starts as fresh as a new process. jupyter_client sees an ordinary kernel through
:class:`ForkProvisioner` (entry point ``jupyter_client.kernel_provisioners``), so papermill
and nbclient drive it unchanged.

The server is its kernels' parent: it reaps them, answers over its socket whether a kernel
still runs and with which exit code, and signals only kernels it has not reaped, so a PID
the system reused never looks alive and never gets a signal. Nothing reads ``/proc``.
Forking needs Linux (``os.fork``, Unix sockets, ``PR_SET_PDEATHSIG``); elsewhere, and for
kernels no server runs for, :class:`ForkProvisioner` starts kernels the ordinary way.

It lives outside ``nbplugins.papermill`` so the server imports neither papermill nor its
plugins. The server runs ``serve(SOCKET)`` in a new process of the kernelspec's
own interpreter and the pool's environment, and dies with the process that started it.
"""

from __future__ import annotations

import asyncio
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
from typing import Any, ClassVar, NoReturn

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.provisioning import KernelProvisionerBase, LocalProvisioner
from jupyter_core.paths import jupyter_path
from traitlets import default

PROVISIONER = "nbplugins-fork"
LAUNCHER = ["-m", "ipykernel_launcher"]
KILL_SETTLE = 0.1  # seconds a killed kernel is watched for its exit before kill() returns


def supported() -> bool:
    """Whether kernels can be forked on this machine (Linux with ``os.fork`` and Unix sockets)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and hasattr(socket, "AF_UNIX")


# ----------------------------------------------------------------------------- server side


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child(request: dict[str, Any]) -> NoReturn:
    """In the forked child: become a fresh kernel process; exit with the kernel's status."""
    code = 1
    try:
        os.setsid()
        _die_with_parent()
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
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:  # a kernel that fails shows it on its own stderr
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


class _Children:
    """The kernels a server forked: live ones by PID, the exit codes of reaped ones by kernel id."""

    def __init__(self) -> None:
        self.pids: dict[int, int] = {}  # kernel id -> PID, until reaped
        self.ids: dict[int, int] = {}  # PID -> kernel id, until reaped
        self.codes: dict[int, int] = {}  # kernel id -> exit code (negative: killed by that signal)
        self._next = 0

    def add(self, pid: int) -> int:
        """Record a new child; its kernel id, which no later child reuses (PIDs are reused)."""
        self._next += 1
        self.pids[self._next], self.ids[pid] = pid, self._next
        return self._next

    def reap(self) -> None:
        """Collect every child that exited; only here does a PID become free for reuse."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            kid = self.ids.pop(pid, None)
            if kid is not None:
                del self.pids[kid]
                self.codes[kid] = os.waitstatus_to_exitcode(status)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The reply to a ``poll``, ``signal`` or ``forget`` request about one kernel."""
        op, kid = request.get("op"), int(request.get("id", 0))
        if kid in self.codes:
            return {"returncode": self.codes.pop(kid) if op == "forget" else self.codes[kid]}
        pid = self.pids.get(kid)
        if pid is None:
            return {"error": f"no kernel {kid} was forked here"}
        if op == "signal":  # not reaped, so the PID is still this kernel's (a zombie at worst)
            signum = int(request["signum"])
            try:
                os.killpg(pid, signum)  # the kernel leads its own group (setsid): its subprocesses too
            except OSError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        elif op not in ("poll", "forget"):
            return {"error": f"unknown request {op!r}"}
        return {"returncode": None}


def _leave(path: str) -> NoReturn:
    """Exit, leaving nothing behind: nobody is left to serve."""
    with contextlib.suppress(OSError):
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    os._exit(0)


def serve(path: str) -> None:
    """Preload ipykernel, then fork or answer about a kernel for each request on the Unix socket ``path``."""
    import ipykernel.kernelapp  # noqa: F401 - the point of the server
    import IPython  # noqa: F401

    parent = os.getppid()  # not PR_SET_PDEATHSIG: it fires when the starting *thread* ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent, which stops us
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(64)
    try:
        print("ready", flush=True)
    except BrokenPipeError:  # the process that started us exited while we imported
        _leave(path)
    # the pipe that said "ready" is never read again: a kernel printing to it (ipykernel writes
    # its connection info at every start) would block once 64 KiB filled it, about 160 kernels in
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    server.settimeout(0.5)
    children = _Children()
    while True:
        children.reap()
        try:
            conn, _ = server.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the process that started us is gone
                _leave(path)
            continue
        with conn:
            conn.settimeout(10)
            try:
                with conn.makefile("r") as reader:
                    request = json.loads(reader.readline())
            except (OSError, ValueError):
                continue
            if request.get("op", "spawn") == "spawn":
                pid = os.fork()
                if pid == 0:
                    server.close()
                    conn.close()
                    _child(request)
                reply = {"pid": pid, "id": children.add(pid)}
            else:
                children.reap()
                reply = children.answer(request)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")


# ----------------------------------------------------------------------------- client side


class ForkedKernel:
    """A kernel forked by a :class:`ForkServer`; its status and signals go through the server."""

    def __init__(self, server: ForkServer, kernel_id: int, pid: int) -> None:
        self.server = server
        self.id = kernel_id
        self.pid = pid
        self.returncode: int | None = None

    def _ask(self, op: str, **extra: Any) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            reply = self.server.request({"op": op, "id": self.id, **extra})
        except OSError:
            if self.server.proc.poll() is None:
                raise
            # the server is gone, and PR_SET_PDEATHSIG terminated its kernels with it
            reply = {"returncode": -signal.SIGTERM}
        if "error" in reply:
            raise RuntimeError(f"kernel fork server: {reply['error']}")
        self.returncode = reply["returncode"]
        return self.returncode

    def poll(self) -> int | None:
        """None while the kernel runs, then its exit code (negative: killed by that signal)."""
        return self._ask("poll")

    def send_signal(self, signum: int) -> None:
        """Signal the kernel's process group, unless it has exited."""
        self._ask("signal", signum=int(signum))

    def forget(self) -> None:
        """Let the server drop the exit code it keeps for this kernel (once it has been read)."""
        with contextlib.suppress(OSError):
            self.server.request({"op": "forget", "id": self.id})


class ForkServer:
    """A running fork server for one interpreter; ``spawn`` forks a kernel from it."""

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

    def request(self, message: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """Send one request and return the server's answer; OSError if it cannot be reached."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.path)
            sock.sendall(json.dumps(message).encode() + b"\n")
            with sock.makefile("r") as reader:
                line = reader.readline()
        if not line:
            raise ConnectionError("the kernel fork server closed the connection")
        return json.loads(line)

    def spawn(self, args: list[str], cwd: str | None, env: dict[str, str]) -> ForkedKernel:
        """Fork a kernel running ``ipykernel_launcher ARGS`` in ``cwd`` with exactly ``env``."""
        reply = self.request({"op": "spawn", "args": args, "cwd": cwd, "env": env})
        return ForkedKernel(self, int(reply["id"]), int(reply["pid"]))

    def close(self) -> None:
        """Stop the server (its kernels end with it, PR_SET_PDEATHSIG) and remove its socket."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self.directory)


class ForkProvisioner(KernelProvisionerBase):  # type: ignore[misc]
    """jupyter_client's kernel provisioner contract for kernels forked from a :class:`ForkServer`.

    Connection files and the command line are prepared as for any local kernel
    (``LocalProvisioner.pre_launch``). A kernel this process runs no server for, or whose
    command does not match the server's interpreter flags, or any kernel where forking is
    not supported, is started by a ``LocalProvisioner`` and every call goes to it. Forked
    kernels belong to this process's servers, so their state is not persisted or reloaded.
    """

    servers: ClassVar[dict[str, ForkServer]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._local = LocalProvisioner(**kwargs)
        self._kernel: ForkedKernel | None = None
        self._exit: int | None = None
        self._forked = False
        self._cwd = os.getcwd()

    @property
    def has_process(self) -> bool:
        """Whether a kernel was started and not yet waited for."""
        return self._kernel is not None or self._local.has_process

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Connection file and kernel command, exactly as for a local kernel."""
        kwargs = await self._local.pre_launch(**kwargs)
        self.connection_info = self._local.connection_info
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Fork the kernel from this interpreter's server, or start it normally where none runs."""
        self._kernel = self._exit = None
        server = self.servers.get(cmd[0]) if supported() else None
        at = _launcher_at(cmd)
        self._forked = server is not None and at > 0 and cmd[1:at] == server.flags
        if server is None or not self._forked:
            return await self._local.launch_kernel(cmd, **kwargs)
        cwd = kwargs.get("cwd")
        self._cwd = os.fspath(cwd) if cwd else os.getcwd()
        env = dict(kwargs.get("env") or os.environ)
        self._kernel = server.spawn(cmd[at + 2:], os.fspath(cwd) if cwd else None, env)
        return self.connection_info

    async def poll(self) -> int | None:
        """None while the kernel runs, else its exit code (negative: the signal that killed it)."""
        if self._kernel is not None:
            return self._kernel.poll()
        if self._local.has_process:
            return await self._local.poll()
        return 0 if self._exit is None else self._exit

    async def wait(self) -> int | None:
        """Wait for the kernel to exit; its exit code."""
        if self._kernel is None:
            if self._local.has_process:
                self._exit = await self._local.wait()
            return 0 if self._exit is None else self._exit
        while (code := self._kernel.poll()) is None:
            await asyncio.sleep(0.05)
        self._kernel.forget()
        self._kernel, self._exit = None, code
        return code

    async def send_signal(self, signum: int) -> None:
        """Signal the kernel's process group (through the server for a forked kernel)."""
        if self._kernel is not None:
            self._kernel.send_signal(signum)
        else:
            await self._local.send_signal(signum)

    async def kill(self, restart: bool = False) -> None:
        """SIGKILL the kernel."""
        if self._kernel is not None:
            self._kernel.send_signal(signal.SIGKILL)
            # it exits within milliseconds: seen here, the manager's next poll finds it gone
            # instead of sleeping its 0.1 s poll interval first (once per kernel of a sweep)
            deadline = time.monotonic() + KILL_SETTLE
            while self._kernel.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
        else:
            await self._local.kill(restart=restart)

    async def terminate(self, restart: bool = False) -> None:
        """SIGTERM the kernel."""
        if self._kernel is not None:
            self._kernel.send_signal(signal.SIGTERM)
        else:
            await self._local.terminate(restart=restart)

    async def cleanup(self, restart: bool = False) -> None:
        """Give back what the kernel's start took (cached TCP ports), whoever started it."""
        await self._local.cleanup(restart=restart)

    def resolve_path(self, path_str: str) -> str | None:
        """A path the kernel named, made absolute against its working directory; None if absent."""
        if not self._forked:
            return self._local.resolve_path(path_str)
        path = Path(path_str).expanduser()
        if not path.is_absolute():
            path = (Path(self._cwd) / path).resolve()
        return path.as_posix() if path.exists() else None


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
    """Start (or reuse) the fork server for a kernelspec; None if its kernels cannot be forked here."""
    if not supported():
        return None
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
    """Stop a fork server (its kernels end with it) and forget it."""
    for key, value in list(ForkProvisioner.servers.items()):
        if value is server:
            del ForkProvisioner.servers[key]
    server.close()
