"""Kernels for nbplugins runs: their environment (credentials, never parameters), IPC
transport, and a warm pool that starts kernels ahead of need.

A kernel gets ``NBPLUGINS_TOKEN_FILE`` pointing at a private (0600) token file that a keeper
thread rewrites before the token expires, so ``nbplugins.tokens.current()`` in the notebook
stays valid for runs that outlast the token; ``OIDC_ACCESS_TOKEN`` is set too for tools that
read it. Hub token files are passed through as they are: the hub keeps them fresh.

Kernels use the IPC transport: no TCP ports to race for (papermill issue #511) and no
unencrypted TCP traffic.

Every kernel manager shares one ZeroMQ context, and every start and stop runs on one event
loop in one thread (:class:`KernelRuntime`): a thousand runs leave no event loop, context or
socket behind, and an interrupted run can stop every live kernel at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager as KernelManager

from nbplugins import files, forkserver, secrets, tokens
from nbplugins.errors import NbpluginsError

log = logging.getLogger(__name__)

#: Environment variables whose values are secrets wherever they appear.
SECRET_ENV = ("OIDC_ACCESS_TOKEN", "FEDCLOUD_OIDC_ACCESS_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "ONEDATA_TOKEN", "ONECLIENT_ACCESS_TOKEN", "OSCAR_TOKEN",
              "NBPLUGINS_OIDC_REFRESH_TOKEN", "NBPLUGINS_OIDC_CLIENT_SECRET", "OIDC_REFRESH_TOKEN",
              "OIDC_CLIENT_SECRET", "D4SCIENCE_TOKEN", "GCUBE_TOKEN", "OSCAR_PASSWORD",
              "NBPLUGINS_HUB_API_TOKEN", "JUPYTERHUB_API_TOKEN")


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
            files.write_atomic(self.path, token.value)
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
                files.write_atomic(self.path, self.token.value)
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


T = TypeVar("T")

#: Longest Unix socket path (sun_path holds 108 bytes with its NUL), less a kernel's own name.
_SOCKET_ROOM = 107 - len("/kernel-0123456789ab-ipc-65535")


def socket_directory(prefix: str = "nbplugins-kernels-") -> str:
    """A private temporary folder for kernels' IPC sockets, short enough for the socket paths.

    A deep ``TMPDIR`` (pytest's, a hub's per-user one) would otherwise fail every kernel with
    "File name too long"; then the folder goes under ``/tmp``.
    """
    directory = tempfile.mkdtemp(prefix=prefix)
    if len(directory) > _SOCKET_ROOM and os.path.isdir("/tmp"):
        os.rmdir(directory)
        directory = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(directory, 0o700)
    return directory



class KernelRuntime:
    """The one owner of the event loop and ZeroMQ context behind every kernel of this process.

    jupyter_client's synchronous wrappers make an event loop per calling thread and each
    manager makes its own ZeroMQ context; a process that starts kernels from many threads
    leaks both until the garbage collector runs (a sweep died at run 160 of 200 of it).
    Here kernels start and stop as coroutines on one loop thread, and the runtime remembers
    every live kernel so an interrupted run can stop them all.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: zmq.asyncio.Context | None = None
        self.live: set[KernelManager] = set()

    @property
    def context(self) -> zmq.asyncio.Context:
        """The ZeroMQ context every kernel manager and client of this process uses."""
        with self._lock:
            if self._context is None or self._context.closed:
                self._context = zmq.asyncio.Context()
            return self._context

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, daemon=True, name="nbplugins-kernels").start()
            return self._loop

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the runtime's loop; the future resolves from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._running_loop())  # type: ignore[arg-type]

    def call(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the runtime's loop and wait for its result."""
        return self.submit(coro).result(timeout)

    async def start(self, km: KernelManager, cwd: str | None, env: Mapping[str, str]) -> KernelManager:
        self.live.add(km)
        try:
            await km.start_kernel(cwd=cwd, env=dict(env))
        except BaseException:
            await self.stop(km)
            raise
        return km

    async def stop(self, km: KernelManager) -> None:
        with contextlib.suppress(Exception):
            await km.shutdown_kernel(now=True)
        with contextlib.suppress(Exception):
            await km.cleanup_resources()
        self.live.discard(km)

    async def alive(self, km: KernelManager) -> bool:
        return bool(await km.is_alive())

    def stop_all(self, timeout: float = 10) -> int:
        """Stop every live kernel (an interrupted run); returns how many there were."""
        kms = list(self.live)
        if kms:
            async def stop_them() -> None:
                await asyncio.gather(*(self.stop(km) for km in kms))

            with contextlib.suppress(concurrent.futures.TimeoutError):
                self.call(stop_them(), timeout)
        return len(kms)


#: The process's one kernel runtime.
runtime = KernelRuntime()


def new_kernel_manager(kernel_name: str, directory: str | os.PathLike[str], fork: bool = False) -> KernelManager:
    """A kernel manager on the IPC transport with its sockets in a private directory.

    With ``fork``, a Python kernel is forked from the running fork server (:mod:`.forkserver`).
    """
    connection = Path(directory) / f"kernel-{uuid.uuid4().hex[:12]}.json"
    specs = forkserver.ForkingKernelSpecManager() if fork else forkserver.LeanKernelSpecManager()
    return KernelManager(kernel_name=kernel_name, transport="ipc", connection_file=str(connection),
                         kernel_spec_manager=specs, context=runtime.context)


def start_kernel(kernel_name: str, directory: str | os.PathLike[str], *, cwd: str | None,
                 env: Mapping[str, str], fork: bool = False) -> KernelManager:
    """Start one kernel with ``cwd`` and ``env`` and return its manager."""
    km = new_kernel_manager(kernel_name, directory, fork=fork)
    return runtime.call(runtime.start(km, cwd, env))


def stop_kernel(km: KernelManager) -> None:
    """Shut a kernel down at once and remove its connection and socket files."""
    with contextlib.suppress(concurrent.futures.TimeoutError):
        runtime.call(runtime.stop(km), timeout=30)


def is_alive(km: KernelManager) -> bool:
    """Whether a started kernel's process still runs."""
    return runtime.call(runtime.alive(km), timeout=30)


class Watchdog:
    """Stops a kernel once ``seconds`` have passed: a run's deadline (``--timeout``)."""

    def __init__(self, km: KernelManager, seconds: float | None) -> None:
        self.seconds = seconds
        self.fired = False
        self._timer: threading.Timer | None = None
        if seconds:
            self._timer = threading.Timer(seconds, self._fire, args=(km,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, km: KernelManager) -> None:
        self.fired = True
        stop_kernel(km)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()


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


#: Memory set aside per kernel when deciding how many can run at once.
KERNEL_MEMORY = 256 * 2**20


def usable_jobs(jobs: int) -> int:
    """``jobs``, or fewer if this machine cannot hold that many kernels at once (said in the log).

    The ceiling is four kernels per core (runs wait on I/O as much as on the CPU) and what
    the available memory holds at :data:`KERNEL_MEMORY` each.
    """
    cores = os.cpu_count() or 1
    available = _available_memory() or cores * 4 * KERNEL_MEMORY
    ceiling = max(1, min(4 * cores, available // KERNEL_MEMORY))
    if jobs > ceiling:
        log.warning("-j %d is more kernels than this machine holds (%d cores, %.1f GiB free): using -j %d",
                    jobs, cores, available / 2**30, ceiling)
        return ceiling
    return max(1, jobs)


def _available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux's MemAvailable), None if unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


_CLOSED: Any = object()


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
        self.directory = socket_directory("nbplugins-pool-")
        self._ready: queue.Queue[Any] = queue.Queue()
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
        km = new_kernel_manager(self.kernel_name, self.directory, fork=self.fork)
        runtime.submit(runtime.start(km, self.cwd, self.env)).add_done_callback(self._started)

    def _started(self, future: concurrent.futures.Future[KernelManager]) -> None:
        error = future.exception()
        if error is not None:  # handed to the taker, who reports it
            self._ready.put(error)
        elif self._closed.is_set():
            runtime.submit(runtime.stop(future.result()))
        else:
            self._ready.put(future.result())

    def take(self) -> KernelManager:
        """A started kernel; a replacement starts at once (up to ``total``)."""
        while True:
            if self._closed.is_set():
                raise NbpluginsError("the run was stopped before its kernel started")
            item = self._ready.get()
            if item is _CLOSED:
                self._ready.put(_CLOSED)  # for the other takers
                continue
            self._spawn()
            if isinstance(item, BaseException):
                raise NbpluginsError(f"kernel {self.kernel_name!r} did not start: {item}")
            if is_alive(item):
                return item
            stop_kernel(item)  # died while waiting: start another in its place
            with self._lock:
                self._spawned -= 1
            self._spawn()

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
        self._ready.put(_CLOSED)  # wakes a taker still waiting
        self._forks.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




@contextlib.contextmanager
def worker_threads(jobs: int, name: str) -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """Threads that run notebooks (nbclient drives a kernel from an event loop per thread);
    their loops are closed when the block ends, not whenever the garbage collector runs."""
    from jupyter_core.utils import ensure_event_loop

    loops: list[asyncio.AbstractEventLoop] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix=name,
                                                 initializer=lambda: loops.append(ensure_event_loop()))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for loop in loops:
            loop.close()

class WarmKernels:
    """Kernels started ahead of need for jobs that each have their own folder and environment
    (a pipeline's next nodes): started in the background while their parents run, taken once
    by key, stopped if never taken. Python kernels are forks of a fork server."""

    def __init__(self, jobs: int) -> None:
        self.directory = socket_directory()
        self._forks = ForkServers()
        self._starter = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs),
                                                              thread_name_prefix="nbplugins-warm")
        self._started: dict[str, concurrent.futures.Future[KernelManager]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._started

    def start(self, key: str, kernel_name: str, *, cwd: str, env: Mapping[str, str]) -> None:
        """Start the kernel for ``key`` in the background (once)."""
        if key in self._started:
            return

        def boot() -> KernelManager:
            return start_kernel(kernel_name, self.directory, cwd=cwd, env=env, fork=self._forks.ready(kernel_name, env))

        self._started[key] = self._starter.submit(boot)

    def take(self, key: str) -> KernelManager | None:
        """The started kernel for ``key``, or None (never started, or failed: a cold start reports why)."""
        future = self._started.pop(key, None)
        if future is None:
            return None
        try:
            return future.result()
        except Exception:  # noqa: BLE001
            return None

    def drop(self, keys: Iterable[str]) -> None:
        """Stop the kernels started for ``keys`` that nobody will take."""
        for key in keys:
            future = self._started.pop(key, None)
            if future is not None:
                future.add_done_callback(lambda f: f.exception() is None and stop_kernel(f.result()))

    def close(self) -> None:
        """Stop every kernel not taken, the fork servers, and remove the socket folder."""
        self.drop(list(self._started))
        self._starter.shutdown(wait=True)
        self._forks.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def credentials() -> Iterator[dict[str, str]]:
    """The credential environment for kernels (token, S3 profile), kept fresh until the block ends."""
    keeper = TokenKeeper()
    try:
        yield {**s3_environment(), **keeper.start()}
    finally:
        keeper.stop()


def require_kernel(name: str, where: str | None = None) -> None:
    """Refuse, in one line, a kernel no installed kernelspec provides.

    Called once before a sweep or pipeline starts its runs: without it, every run fails on
    its own, each with a kernel-start traceback. ``where`` (a notebook path) starts the line.
    """
    from jupyter_client.kernelspec import NoSuchKernel

    from nbplugins.errors import ExecutionError

    at = f"{where}: " if where else ""
    specs = forkserver.LeanKernelSpecManager()
    try:
        specs.get_kernel_spec(name)
    except NoSuchKernel:
        installed = ", ".join(sorted(specs.find_kernel_specs())) or "none"
        raise ExecutionError(f"{at}no kernel named {name!r} is installed (installed: {installed}); install it, "
                             "or open the notebook in Jupyter and choose one of these") from None
    except (OSError, ValueError) as exc:  # a kernel.json that is not JSON, or unreadable
        raise ExecutionError(f"{at}the kernelspec of kernel {name!r} is unreadable ({exc})") from None


def require_notebook_kernels(notebooks: Iterable[str | os.PathLike[str]], kernel_name: str | None = None) -> None:
    """:func:`require_kernel` for each notebook's kernel; ``kernel_name`` overrides them all, and
    a notebook that names none runs ``python3`` (as the pipeline runner does)."""
    if kernel_name:
        require_kernel(kernel_name)
        return
    import json

    checked: set[str] = set()
    for path in notebooks:
        try:
            name = json.loads(Path(path).read_bytes())["metadata"]["kernelspec"]["name"]
        except (OSError, ValueError, KeyError, TypeError):  # unreadable ones fail validation on their own
            name = None
        name = name if isinstance(name, str) and name else "python3"
        if name not in checked:
            require_kernel(name, where=os.fspath(path))
            checked.add(name)
