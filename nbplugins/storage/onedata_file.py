"""An open Onedata file: ranged GETs with readahead; writes in offset PUTs, several in flight, to a
temporary name that is moved over the target when the file is closed (:class:`OnedataFile`).

A write that fails, or leaves its ``with`` block by an exception, is discarded (its temporary
file deleted); one never closed is neither committed nor cleaned up by the garbage collector.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile

if TYPE_CHECKING:
    from nbplugins.storage.onedata import OnedataFileSystem

log = logging.getLogger(__name__)


class OnedataFile(AbstractBufferedFile):
    """A file: ranged GETs with readahead; writes in offset PUTs to a temporary name, moved on close.

    ``ab`` appends in place with offset PUTs (the REST API has no atomic append).
    """

    def __init__(self, fs: OnedataFileSystem, path: str, mode: str = "rb", **kwargs: Any) -> None:
        self._pending: list[Future] = []
        self._pool: ThreadPoolExecutor | None = None
        self._temp: str | None = None
        self._temp_id: str | None = None
        self._append: tuple[str, int] | None = None
        self._committed = False
        self._direct = False
        if mode == "rb":
            info = fs.info(path)
            if info["type"] == "directory":
                raise IsADirectoryError(errno.EISDIR, "Onedata: is a directory", fs.unstrip_protocol(path))
            self._details = info
        elif mode == "xb" and fs.exists(path):
            raise FileExistsError(errno.EEXIST, "Onedata: the file exists", fs.unstrip_protocol(path))
        elif mode == "ab":
            try:
                info = fs.info(path)
            except FileNotFoundError:
                info = None
            if info is not None:
                if info["type"] == "directory":
                    raise IsADirectoryError(errno.EISDIR, "Onedata: is a directory", fs.unstrip_protocol(path))
                self._append = (fs._file_id(path), int(info["size"]))
        super().__init__(fs, path, mode, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs._get_range(self.path, start, end)

    def _initiate_upload(self) -> None:
        if self._append is not None:
            self.offset = self._append[1]  # the first chunk creates the temporary file otherwise

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        fs: OnedataFileSystem = self.fs
        if self._append is not None:
            for start in range(0, len(data), self.blocksize):
                self._submit(self.path, self._append[0], self.offset + start, data[start:start + self.blocksize])
            if final:
                self._drain()
                self._committed = True
                fs._forget(self.path)
            return True
        if self.offset == 0 and self._temp is None and final and self.path not in fs._ids:
            # the whole file in one request, straight to its name: op-worker unlinks it if the
            # body fails, so a half-written file never shows; an existing target goes the long way
            try:
                fs._create(self.path, data)
                self._direct = True
                return True
            except FileExistsError:
                if self.mode == "xb":
                    raise
        for start in range(0, max(len(data), 1 if self._temp is None else 0), self.blocksize):
            piece = data[start:start + self.blocksize]
            if self._temp is None:
                parent, name = fs._parent(self.path), self.path.rsplit("/", 1)[-1]
                self._temp = f"{parent}/.{name}.nbp-{uuid.uuid4().hex[:12]}.part"
                self._temp_id = fs._create(self._temp, piece)
            else:
                self._submit(self._temp, self._temp_id, self.offset + start, piece)
        if final:
            self._drain()
            if self.autocommit:
                self.commit()
        return True

    def _submit(self, path: str, fid: str | None, offset: int, piece: bytes) -> None:
        """Send one piece in the background, at most ``concurrency`` in flight; raise earlier failures."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.fs.concurrency, thread_name_prefix="onedata-put")
        running = []
        for future in self._pending:
            if future.done():
                future.result()
            else:
                running.append(future)
        while len(running) >= self.fs.concurrency:
            running.pop(0).result()
        running.append(self._pool.submit(self.fs._write_at, path, fid, offset, piece))
        self._pending = running

    def _drain(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending = []
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def commit(self) -> None:
        """Give the written data its final name (nothing to do if it was created there directly)."""
        if self._committed or self._direct:
            self._committed = True
            return
        fs: OnedataFileSystem = self.fs
        if self._temp is None:
            fs._replace_target(self.path)
            fs._create(self.path, b"")
        else:
            fs._replace_target(self.path)
            fs._cdmi("move", self._temp, self.path, False)
            fs._forget(self._temp)
            fs._forget(self.path)
            self._temp = None
        self._committed = True

    def discard(self) -> None:
        """Drop what was written: the temporary file goes, the target is untouched."""
        with contextlib.suppress(Exception):  # the failure that brought us here is what counts
            self._drain()
        if self._temp is not None:
            try:
                self.fs._delete(self._temp)
            except Exception as exc:  # best effort: its name says what it is
                log.warning("could not remove temporary %s: %s", self.fs.unstrip_protocol(self._temp), exc)
            self._temp = None

    def close(self) -> None:
        if self.closed or self.mode == "rb":
            return super().close()
        try:
            super().close()
        except BaseException:
            self.discard()
            raise

    def __exit__(self, exc_type: Any, *args: Any) -> None:
        if exc_type is not None and self.mode != "rb" and not self.closed:
            self.discard()  # the block failed: nothing reaches the final name
            self.closed = True
            return
        self.close()

    def __del__(self) -> None:
        """A write nobody closed is neither committed nor cleaned up here: no requests during garbage collection.

        The temporary file (``.NAME.nbp-XXXX.part``, never the target's name) stays on the
        provider; close files, or use ``with``, so :meth:`discard` removes it.
        """
        if getattr(self, "closed", True) or self.mode == "rb":
            return
        self.closed = True
        with contextlib.suppress(Exception):  # (at interpreter exit, logging may be gone)
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            if self._temp is not None:
                log.warning("onedata://%s was never closed: not committed; its temporary %s is left behind",
                            self.path, self.fs.unstrip_protocol(self._temp))
