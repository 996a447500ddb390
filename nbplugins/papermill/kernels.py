"""Kernels for nbplugins runs: their environment (credentials, never parameters), IPC
transport, and a warm pool that starts kernels ahead of need.

A kernel gets ``NBPLUGINS_TOKEN_FILE`` pointing at a private (0600) token file that a keeper
thread rewrites before the token expires, so ``nbplugins.tokens.current()`` in the notebook
stays valid for runs that outlast the token; ``OIDC_ACCESS_TOKEN`` is set too for tools that
read it. Hub token files are passed through as they are: the hub keeps them fresh.

Kernels use the IPC transport: no TCP ports to race for (papermill issue #511) and no
unencrypted TCP traffic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager as KernelManager
from jupyter_core.utils import run_sync

from nbplugins import forkserver, secrets, tokens
from nbplugins.errors import NbpluginsError

log = logging.getLogger(__name__)

#: Environment variables whose values are secrets wherever they appear.
SECRET_ENV = ("OIDC_ACCESS_TOKEN", "FEDCLOUD_OIDC_ACCESS_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "ONEDATA_TOKEN", "ONECLIENT_ACCESS_TOKEN", "OSCAR_TOKEN",
              "NBPLUGINS_OIDC_REFRESH_TOKEN", "NBPLUGINS_OIDC_CLIENT_SECRET", "OIDC_REFRESH_TOKEN",
              "OIDC_CLIENT_SECRET")


class TokenKeeper:
    """Keeps a private token file fresh while kernels run; shared by every run of a process."""

    def __init__(self, resolver: tokens.TokenResolver | None = None) -> None:
        self.resolver = resolver
        self.directory = Path(tempfile.mkdtemp(prefix="nbplugins-kernel-"))
        os.chmod(self.directory, 0o700)
        self.path = self.directory / "access_token"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.token: tokens.Token | None = None

    def start(self) -> dict[str, str]:
        """Resolve the token once and return the environment a kernel needs; {} if none."""
        resolver = self.resolver or tokens.default_resolver()
        try:
            token = resolver.get()
        except NbpluginsError as exc:
            log.info("no token for the kernel (%s); notebooks that need one will say so", exc)
            return {}
        self.token = token
        source = next((s for s in resolver.sources() if s.describe() == token.source), None)
        if isinstance(source, tokens.FileSource) and source.path is not None:
            path = str(source.path)  # a hub file: the hub keeps it fresh
        else:
            secrets.write_private(self.path, token.value)
            path = str(self.path)
            self._thread = threading.Thread(target=self._keep, args=(resolver,), daemon=True,
                                            name="nbplugins-token-keeper")
            self._thread.start()
        # the kernel's own resolver reads only the file: OIDC_ACCESS_TOKEN goes stale in long runs
        return {"NBPLUGINS_TOKEN_FILE": path, "NBPLUGINS_TOKEN_SOURCE": "file", "OIDC_ACCESS_TOKEN": token.value}

    def _keep(self, resolver: tokens.TokenResolver) -> None:
        margin = resolver.cfg.refresh_margin
        while True:
            left = self.token.seconds_left() if self.token else None
            wait = 60.0 if left is None else max(1.0, left - margin - 5)
            if self._stop.wait(wait):
                return
            try:
                self.token = resolver.get()
                secrets.write_private(self.path, self.token.value)
                log.debug("token file for kernels refreshed")
            except NbpluginsError as exc:
                log.warning("could not refresh the kernels' token: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def s3_environment() -> dict[str, str]:
    """The default S3 profile as ``AWS_*`` variables, so plain boto3/s3fs/fsspec in a notebook
    reach the same endpoint with the same keys and checksum mode as nbplugins does."""
    from nbplugins.storage import s3

    try:
        settings = s3.resolve()
    except NbpluginsError as exc:
        log.info("no S3 profile for the kernel (%s)", exc)
        return {}
    env = {"AWS_DEFAULT_REGION": settings.region, "AWS_REGION": settings.region,
           "AWS_REQUEST_CHECKSUM_CALCULATION": settings.checksum,
           "AWS_RESPONSE_CHECKSUM_VALIDATION": settings.checksum}
    if settings.endpoint_url:
        env["AWS_ENDPOINT_URL_S3"] = settings.endpoint_url
    if settings.access_key_id and settings.secret_access_key:
        env["AWS_ACCESS_KEY_ID"] = settings.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = settings.secret_access_key
        if settings.session_token:
            env["AWS_SESSION_TOKEN"] = settings.session_token
    elif settings.aws_profile:
        env["AWS_PROFILE"] = settings.aws_profile
    return env


def kernel_environment(extra: Mapping[str, str] | None, credentials: Mapping[str, str]) -> dict[str, str]:
    """The kernel's environment: this process's, our credentials, then the run's extras."""
    secrets.environ_secrets(SECRET_ENV)
    env = dict(os.environ)
    env.update(credentials)
    env.update(extra or {})
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def new_kernel_manager(kernel_name: str, directory: str | os.PathLike[str], fork: bool = False) -> KernelManager:
    """A kernel manager on the IPC transport with its sockets in a private directory.

    With ``fork``, a Python kernel is forked from the running fork server (:mod:`.forkserver`).
    """
    connection = Path(directory) / f"kernel-{uuid.uuid4().hex[:12]}.json"
    specs = forkserver.ForkingKernelSpecManager() if fork else forkserver.LeanKernelSpecManager()
    return KernelManager(kernel_name=kernel_name, transport="ipc", connection_file=str(connection),
                         kernel_spec_manager=specs)


def start_kernel(kernel_name: str, directory: str | os.PathLike[str], *, cwd: str | None,
                 env: Mapping[str, str], fork: bool = False) -> KernelManager:
    """Start one kernel with ``cwd`` and ``env`` and return its manager."""
    km = new_kernel_manager(kernel_name, directory, fork=fork)
    run_sync(km.start_kernel)(cwd=cwd, env=dict(env))
    return km


def stop_kernel(km: KernelManager) -> None:
    """Shut a kernel down at once and remove its connection and socket files."""
    with contextlib.suppress(Exception):
        run_sync(km.shutdown_kernel)(now=True)
    with contextlib.suppress(Exception):
        run_sync(km.cleanup_resources)()


class ForkServers:
    """Kernel fork servers by kernel name: started on first use, stopped together."""

    def __init__(self) -> None:
        self._servers: dict[str, forkserver.ForkServer | None] = {}
        self._lock = threading.Lock()

    def ready(self, kernel_name: str, env: Mapping[str, str]) -> bool:
        """True if kernels of ``kernel_name`` can be forked (starting the server if needed)."""
        with self._lock:
            if kernel_name not in self._servers:
                try:
                    self._servers[kernel_name] = forkserver.start_server(kernel_name, dict(env))
                except Exception as exc:  # fall back to ordinary kernel starts
                    log.info("no kernel fork server for %s (%s); starting kernels normally", kernel_name, exc)
                    self._servers[kernel_name] = None
            return self._servers[kernel_name] is not None

    def server(self, kernel_name: str) -> forkserver.ForkServer | None:
        return self._servers.get(kernel_name)

    def close(self) -> None:
        with self._lock:
            for server in self._servers.values():
                if server is not None:
                    forkserver.stop_server(server)
            self._servers.clear()


class KernelPool:
    """Kernels started ahead of need, all alike (kernel, cwd, env); each is used for one run.

    ``take()`` hands out a started kernel and starts a replacement in the background, so
    kernel start-up overlaps execution. A kernel is never reused: no state carries over.
    Python kernels are forked from a fork server unless ``fork=False``.
    """

    def __init__(self, kernel_name: str, *, size: int, cwd: str | None, env: Mapping[str, str],
                 total: int | None = None, fork: bool = True) -> None:
        self.kernel_name = kernel_name
        self.cwd = cwd
        self.env = dict(env)
        self.size = max(1, size)
        self.total = total  # kernels ever needed: no spare is started past it
        self.directory = tempfile.mkdtemp(prefix="nbplugins-pool-")
        self._ready: queue.Queue[KernelManager | BaseException] = queue.Queue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._spawned = 0
        self._forks = ForkServers()
        self.fork = fork and self._forks.ready(kernel_name, self.env)
        for _ in range(self.size if total is None else min(self.size, total)):
            self._spawn()

    @property
    def server(self) -> forkserver.ForkServer | None:
        """The fork server this pool's kernels come from, if any."""
        return self._forks.server(self.kernel_name)

    def _spawn(self) -> None:
        with self._lock:
            if self._closed.is_set() or (self.total is not None and self._spawned >= self.total):
                return
            self._spawned += 1
        threading.Thread(target=self._start_one, daemon=True, name="nbplugins-kernel-start").start()

    def _start_one(self) -> None:
        try:
            km = start_kernel(self.kernel_name, self.directory, cwd=self.cwd, env=self.env, fork=self.fork)
        except BaseException as exc:  # handed to the taker, who reports it
            self._ready.put(exc)
        else:
            if self._closed.is_set():
                stop_kernel(km)
            else:
                self._ready.put(km)

    def take(self) -> KernelManager:
        """A started kernel; a replacement starts at once (up to ``total``)."""
        item = self._ready.get()
        self._spawn()
        if isinstance(item, BaseException):
            raise NbpluginsError(f"kernel {self.kernel_name!r} did not start: {item}")
        if not run_sync(item.is_alive)():  # died while waiting: start another in its place
            stop_kernel(item)
            with self._lock:
                self._spawned -= 1
            self._spawn()
            return self.take()
        return item

    def close(self) -> None:
        """Stop every idle kernel and the ones still starting."""
        self._closed.set()
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, KernelManager):
                stop_kernel(item)
        self._forks.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def credentials() -> Iterator[dict[str, str]]:
    """The credential environment for kernels (token, S3 profile), kept fresh until the block ends."""
    keeper = TokenKeeper()
    try:
        yield {**s3_environment(), **keeper.start()}
    finally:
        keeper.stop()
