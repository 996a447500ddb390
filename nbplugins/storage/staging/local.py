"""The local disk as either side of a transfer: positional writes into a temporary file, renamed when verified."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from nbplugins import files, paths
from nbplugins.errors import StorageError, TransientError, ValidationError
from nbplugins.storage.staging.checksums import CHUNK, ChecksumMismatch, PartHash, pread_views
from nbplugins.storage.staging.endpoint import TMP_MARK, Endpoint, disk_error
from nbplugins.storage.staging.job import Job, Reread
from nbplugins.storage.staging.plan import Entry, Have, Listed, Listing

READ_BLOCK = 64 * CHUNK  # a source block handed to a writer (an S3 part is gathered from a few of these)
#: The most one pwrite call writes. The page cache sizes the folio it allocates for a write by
#: the write's length: a 1 MiB pwrite takes order-8 folios, a 32 KiB one order-3, the largest
#: small order the kernel keeps on its per-CPU lists of recently freed (warm) pages. On a VM whose
#: balloon driver hands free memory back to the host (Firecracker here), larger orders most
#: likely come from that returned memory, each page costing a host fault on first touch:
#: measured here (perf, in benchmarks/staging.py), a 512 MiB get spent 1.8 s of kernel time
#: in the copy into the page cache with 1 MiB writes and 0.2 s with 32 KiB ones (s5cmd,
#: through Go's io.Copy, writes 32 KiB too). Elsewhere slicing costs a few thousand cheap
#: syscalls per GiB.
WRITE_SLICE = 32 << 10


class LocalEndpoint(Endpoint):
    """Files on this machine: read with pread; written in parallel with pwrite into ``.NAME.nbp-part-XXXX``."""

    local = True
    kind = "local"

    # -- as a source

    def list(self) -> Listing:
        path = self.path
        if os.path.isfile(path):
            return Listing([Listed(os.path.basename(path), path, os.path.getsize(path))], False)
        if not os.path.isdir(path):
            raise StorageError(f"{self.url}: no such file or directory")
        found = []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                if TMP_MARK in name:
                    continue
                full = os.path.join(root, name)
                found.append(Listed(os.path.relpath(full, path).replace(os.sep, "/"), full, os.path.getsize(full)))
        return Listing(found, True, self.read_manifest())

    def read(self, path: str, offset: int, length: int) -> Iterator[bytes]:
        fd = os.open(path, os.O_RDONLY)
        try:
            pos, end = offset, offset + length
            while pos < end:
                block = os.pread(fd, min(end - pos, READ_BLOCK), pos)
                if not block:
                    raise StorageError(f"{path}: file shrank while it was being sent")
                yield block
                pos += len(block)
        finally:
            os.close(fd)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def local_file(self, path: str) -> str | None:
        return path

    def reread_source(self, path: str) -> Reread:
        """pread from the source file (an upload's ordered whole-file hash reads parts back from the page cache)."""

        def reread(offset: int, length: int) -> Iterator[memoryview]:
            with _reading_back(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    yield from pread_views(fd, offset, length, f"{path}: file shrank while it was being sent")
                finally:
                    os.close(fd)

        return reread

    # -- as a destination

    def is_dir_target(self) -> bool:
        return self.url.endswith("/") or os.path.isdir(self.path)

    def check_dir(self, src_url: str) -> None:
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise StorageError(f"{self.path}: is a file, expected a directory for {src_url}")

    def check_inside(self, rel: str, src_url: str) -> None:
        try:  # links followed: a folder that links out is refused too
            paths.inside(self.path, rel, "path")
        except ValidationError as exc:
            raise StorageError(f"{src_url}: {exc}: it escapes the destination; nothing was transferred") from None

    def existing(self, entries: list[Entry]) -> dict[str, Have]:
        out: dict[str, Have] = {}
        for e in entries:
            with contextlib.suppress(OSError):
                if os.path.isfile(e.dest):
                    out[e.dest] = (os.path.getsize(e.dest), None, None)
        return out

    def files_below(self, have: dict[str, Have]) -> list[str]:
        return [os.path.join(root, name) for root, _, names in os.walk(self.path) for name in names]

    def remove(self, path: str) -> None:
        os.unlink(path)

    def tmp_name(self, target: str) -> str:
        directory = os.path.dirname(target) or "."
        return os.path.join(directory, paths.temp_name(os.path.basename(target), f"{TMP_MARK}{uuid.uuid4().hex[:8]}"))

    def part_share(self, concurrency: int) -> int:
        return concurrency  # the disk takes parts in any order

    def open(self, job: Job) -> None:
        target = job.entry.dest
        directory = os.path.dirname(target) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(f"{directory}: a file is in the way where a directory is expected") from None
        except OSError as exc:  # a read-only destination, a full disk
            raise disk_error(directory, exc) from None
        if os.path.isdir(target):
            raise StorageError(f"{target}: a directory is in the way where a file is expected")
        tmp = self.tmp_name(target)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise disk_error(directory, exc) from None
        job.handle = (fd, tmp)
        try:
            os.ftruncate(fd, job.entry.size)
        except OSError as exc:
            self.abort(job)
            raise disk_error(target, exc) from None

    def write_part(self, job: Job, index: int, source: Endpoint, hashes: PartHash) -> None:
        offset, length = job.part_range(index)
        fd = job.handle[0]
        pos = offset
        for block in source.read(job.entry.src, offset, length):
            self._pwrite(job, fd, block, pos)
            hashes.update(block)
            pos += len(block)
        if pos != offset + length:
            raise TransientError(f"{job.what(index)}: read {pos - offset} of {length} bytes")

    @staticmethod
    def _pwrite(job: Job, fd: int, block: bytes | memoryview, offset: int) -> None:
        """Write ``block`` at ``offset`` in slices of :data:`WRITE_SLICE` (views: no copy)."""
        view = memoryview(block)
        try:
            while view:
                written = os.pwrite(fd, view[:WRITE_SLICE], offset)  # short writes (a signal): the rest next turn
                offset += written
                view = view[written:]
        except OSError as exc:
            raise disk_error(job.entry.dest, exc) from None

    def reread_written(self, job: Job) -> Reread:
        """pread from the temporary file (the ordered whole-file hash reads parts back from the page cache)."""
        fd, dest = job.handle[0], job.entry.dest

        def reread(offset: int, length: int) -> Iterator[memoryview]:
            with _reading_back(dest):
                yield from pread_views(fd, offset, length, f"{dest}: temporary file shorter than written")

        return reread

    def commit(self, job: Job) -> None:
        fd, tmp = job.handle
        os.close(fd)
        job.handle = (None, tmp)
        if os.path.getsize(tmp) != job.entry.size:
            raise ChecksumMismatch(f"{job.entry.dest}: size {os.path.getsize(tmp)}, expected {job.entry.size}")
        try:
            os.replace(tmp, job.entry.dest)
        except OSError as exc:
            raise disk_error(job.entry.dest, exc) from None
        return None

    def abort(self, job: Job) -> None:
        if not job.handle:
            return
        fd, tmp = job.handle
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        job.handle = None

    def write_manifest(self, path: str, body: bytes) -> None:
        try:
            files.write_atomic(path, body, mode=None)
        except OSError as exc:
            raise disk_error(path, exc) from None


@contextlib.contextmanager
def _reading_back(path: str) -> Iterator[None]:
    """Say which file could not be read back for a whole-file checksum."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{path}: cannot read back for the checksum: {exc.strerror or exc}") from None
