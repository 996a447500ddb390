"""papermill I/O handlers for ``s3://`` and ``onedata://`` through the storage layer (fsspec + profiles).

Registered through the ``papermill.io`` entry-point group; ours replaces papermill's boto3
S3 handler, which ignores custom endpoints for listing and sends ACL headers.

papermill saves the output after every cell (17 saves for a 7-cell notebook). Remote
writes are therefore buffered per output URL: the first save is uploaded at once (the output
exists from the start), later ones at most every ``[storage] save_interval`` seconds (a timer
uploads the latest buffered state while a long cell runs), and the final save at once. A
save is final when papermill has stamped ``metadata.papermill.end_time`` (its
``notebook_complete`` does that in a ``finally``, before the last writes, also on errors) or
when the notebook was never started (``--prepare-only``). Identical content is never sent
twice, and an ``atexit`` hook flushes anything still buffered. Every upload is scrubbed of
registered secrets first.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from nbplugins import config, secrets, storage
from nbplugins.errors import StorageError
from nbplugins.retry import Retry, describe, foreign_as

log = logging.getLogger(__name__)


def is_final(buf: str) -> bool:
    """True when papermill is done with this notebook (end_time stamped, or never started)."""
    try:
        meta = json.loads(buf).get("metadata", {}).get("papermill", {})
    except (ValueError, AttributeError):
        return True
    if not isinstance(meta, dict):
        return True
    return meta.get("end_time") is not None or meta.get("start_time") is None


@dataclass
class _Pending:
    buf: str | None = None
    sent_hash: str | None = None
    last_flush: float = 0.0
    uploads: int = 0
    timer: threading.Timer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    error: BaseException | None = None


class RemoteHandler:
    """A papermill handler (``read``, ``write``, ``listdir``, ``pretty_path``) for one URL scheme."""

    def __init__(self, scheme: str, interval: float | None = None) -> None:
        self.scheme = scheme
        self._interval = interval
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._locations: dict[str, storage.Location] = {}
        atexit.register(self.flush_all)

    @property
    def interval(self) -> float:
        if self._interval is not None:
            return self._interval
        return config.get().storage.save_interval

    def _location(self, url: str) -> tuple[Any, str]:
        """The filesystem for ``url`` (one per scheme and bucket/space, reused) and the path."""
        scheme, rest = storage.split_url(url)
        root = rest.split("/", 1)[0]
        key = f"{scheme}://{root}"
        with self._lock:
            loc = self._locations.get(key)
            if loc is None:
                loc = self._locations[key] = storage.locate(url)
        if scheme == "s3":
            return loc.fs, rest
        return loc.fs, loc.fs._strip_protocol(url)

    def _retry(self) -> Retry:
        return config.retry_policy()

    # -- papermill's interface

    def _remote(self, path: str, verb: str, missing: str, fn: Any) -> Any:
        """Run ``fn(fs, inner)`` through the shared retry, with one error type and message."""
        fs, inner = self._location(path)

        def domain(exc: Exception) -> StorageError:
            if isinstance(exc, FileNotFoundError):
                return StorageError(f"{path}: {missing}")
            return StorageError(f"{path}: cannot {verb}: {describe(exc)}")

        return self._retry().call(lambda: fn(fs, inner), what=f"{verb} {path}", map_error=foreign_as(domain))

    def read(self, path: str) -> str:
        data = self._remote(path, "read", "no such notebook", lambda fs, inner: fs.cat_file(inner))
        return data.decode("utf-8") if isinstance(data, bytes) else data

    def listdir(self, path: str) -> list[str]:
        names = self._remote(path, "list", "no such directory", lambda fs, inner: fs.ls(inner, detail=False))
        return [f"{self.scheme}://{n.split('://', 1)[-1]}" for n in names]

    def pretty_path(self, path: str) -> str:
        return path

    def write(self, buf: str, path: str) -> None:
        """Buffer a save; upload now if it is the first, the final, or the interval has passed."""
        with self._lock:
            state = self._pending.setdefault(path, _Pending())
        with state.lock:
            if state.error is not None:
                error, state.error = state.error, None
                raise error
            state.buf = buf
            due = state.uploads == 0 or is_final(buf) or time.monotonic() - state.last_flush >= self.interval
            if due:
                self._flush_locked(path, state)
            elif state.timer is None:
                delay = max(0.0, state.last_flush + self.interval - time.monotonic())
                state.timer = threading.Timer(delay, self._timer_flush, args=(path,))
                state.timer.daemon = True
                state.timer.start()

    # -- flushing

    def _timer_flush(self, path: str) -> None:
        state = self._pending.get(path)
        if state is None:
            return
        with state.lock:
            state.timer = None
            try:
                self._flush_locked(path, state)
            except BaseException as exc:  # noqa: BLE001 - reported on the next write
                log.warning("%s: periodic save failed: %s", path, exc)
                state.error = exc

    def _flush_locked(self, path: str, state: _Pending) -> None:
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if state.buf is None:
            return
        body = secrets.redact(state.buf).encode("utf-8")
        digest = hashlib.sha256(body).hexdigest()
        state.buf = None
        if digest == state.sent_hash:
            return
        fs, inner = self._location(path)
        self._retry().call(lambda: fs.pipe_file(inner, body), what=f"save {path}", map_error=foreign_as(
            lambda exc: StorageError(f"{path}: cannot save the notebook: {describe(exc)}")))
        state.sent_hash = digest
        state.last_flush = time.monotonic()
        state.uploads += 1
        log.debug("saved %s (upload %d)", path, state.uploads)

    def flush(self, path: str) -> None:
        """Upload the buffered state of ``path`` now, if any."""
        state = self._pending.get(path)
        if state is not None:
            with state.lock:
                self._flush_locked(path, state)

    def flush_all(self) -> None:
        """Upload everything still buffered (runs at interpreter exit)."""
        for path in list(self._pending):
            try:
                self.flush(path)
            except Exception as exc:  # noqa: BLE001 - at exit, report and go on
                log.error("%s: final save failed: %s", path, exc)


s3_handler = RemoteHandler("s3")
onedata_handler = RemoteHandler("onedata")
