"""Start a server process on a free 127.0.0.1 port, wait until it answers, stop it by PID.

Used by the pytest fixtures and by ``make demo``. A server dies with the process that
started it (``PR_SET_PDEATHSIG``), so a killed test run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
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


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
    def check() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return True
        return False

    return check


@dataclass
class ServerProcess:
    """A running server: its URL, port, PID and log file."""

    name: str
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, object] = field(default_factory=dict)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after 5 s."""
        if self.proc.poll() is not None:
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
) -> ServerProcess:
    """Start ``argv`` (``{port}`` is replaced), wait until ``ready()``; raise with its log if not."""
    port = port or free_port()
    url = (url or f"http://{HOST}:{{port}}").replace("{port}", str(port))
    argv = [a.replace("{port}", str(port)) for a in argv]
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"nbp-{name}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    handle = open(log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
    proc = subprocess.Popen(
        argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    handle.close()
    server = ServerProcess(name, url, port, proc, log_path)
    check = ready or tcp_ready(port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
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
