"""Start a server process on a free 127.0.0.1 port, wait until it answers, stop it by PID.

Used by ``nbplugins sandbox``, the pytest fixtures and ``make demo``. By default a server
dies with the process that started it (``PR_SET_PDEATHSIG``), so a killed test run leaves
nothing behind; ``detach=True`` lets it outlive its parent (``nbplugins sandbox up
--detach``), and :func:`stop_pid` stops it later from the PID and start time kept in a
state file. Each server leads its own process group, so stopping it stops its children too.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound right now (nothing listens or holds it).

    ``SO_REUSEADDR`` as servers set it: connections of a stopped server in TIME_WAIT do not count.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


_on_spawn: contextvars.ContextVar[Callable[[ServerProcess], None] | None] = contextvars.ContextVar(
    "on_spawn", default=None)


@contextlib.contextmanager
def on_spawn(record: Callable[[ServerProcess], None]) -> Iterator[None]:
    """Call ``record(server)`` for every server started in the block, right after its process exists.

    The sandbox writes each PID to its state file this way before waiting for the server to
    answer, so a crash of ``up`` in between leaves nothing that ``down`` cannot find.
    """
    token = _on_spawn.set(record)
    try:
        yield
    finally:
        _on_spawn.reset(token)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def http_ready(url: str, verify: bool = True) -> Callable[[], bool]:
    """A readiness check: the URL answers HTTP at all (any status)."""
    import ssl

    context = None if verify else ssl._create_unverified_context()

    def check() -> bool:
        try:
            urllib.request.urlopen(url, timeout=2, context=context)  # noqa: S310
            return True
        except urllib.error.HTTPError:
            return True
        except (OSError, urllib.error.URLError):
            return False

    return check


def tcp_ready(port: int) -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on ``port``."""
    def check() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return True
        return False

    return check


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), or None if it is gone: tells a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has exited; only its exit status is left
        return None
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (zombies left out)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def alive(pid: int, ticks: int | None = None) -> bool:
    """Whether the process ``pid`` (started at ``ticks``, when given) still runs."""
    now = start_ticks(pid)
    return now is not None and (ticks is None or now == ticks)


def stop_pid(pid: int, ticks: int | None = None, timeout: float = 5.0) -> bool:
    """Stop the process group led by ``pid``: SIGTERM, then SIGKILL after ``timeout`` s.

    ``ticks`` (from :func:`start_ticks`) guards against a reused PID: a different process
    under the same PID is left alone. A group whose leader already died is still stopped
    (its members keep the group id, which the kernel never hands out while they live).
    Returns whether anything was running.
    """
    now = start_ticks(pid)
    if ticks is not None and now is not None and now != ticks:
        return False  # the PID was reused, so the group it led is gone too
    if now is None and not group_members(pid):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
            if not alive(pid) and not group_members(pid):
                return True
            time.sleep(0.05)
    return True


@dataclass
class ServerProcess:
    """A running server: its URL, port, PID and log file."""

    name: str
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, object] = field(default_factory=dict)
    ticks: int | None = None  # the process's start time, for stopping it by PID later

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after 5 s."""
        if self.proc.poll() is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group_members(self.proc.pid):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # children left behind by a dead leader
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def start(
    name: str,
    argv: Sequence[str],
    *,
    port: int | None = None,
    url: str | None = None,
    ready: Callable[[], bool] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    log_dir: str | os.PathLike[str] | None = None,
    detach: bool = False,
) -> ServerProcess:
    """Start ``argv`` (``{port}`` is replaced), wait until ``ready()``; raise with its log if not.

    With ``detach`` the server outlives this process; otherwise it dies with it.
    """
    port = port or free_port()
    url = (url or f"http://{HOST}:{{port}}").replace("{port}", str(port))
    argv = [a.replace("{port}", str(port)) for a in argv]
    if not port_free(port):  # a readiness check would take whoever holds it for our server
        raise RuntimeError(f"{name}: port {port} on {HOST} is already taken")
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"nbp-{name}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    # 0600: servers log what they see (oidc-provider-mock logs client secrets)
    handle = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb")
    os.chmod(log_path, 0o600)  # an older log of the same name keeps its mode otherwise
    proc = subprocess.Popen(
        argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        preexec_fn=None if detach else _die_with_parent,
    )
    handle.close()
    server = ServerProcess(name, url, port, proc, log_path, ticks=start_ticks(proc.pid))
    record = _on_spawn.get()
    if record is not None:
        try:
            record(server)
        except BaseException:
            server.stop()
            raise
    check = ready or tcp_ready(port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"{name} exited with {proc.returncode} before it answered:\n{server.log()}")
        if check():
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not answer within {timeout:.0f} s:\n{server.log()}")


@contextlib.contextmanager
def running(name: str, argv: Sequence[str], **kwargs: object) -> Iterator[ServerProcess]:
    """Context manager form of :func:`start` that always stops the server."""
    server = start(name, argv, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def venv_bin(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name
