"""The contract of one side of a transfer, whatever the backend: list, exists, read, write, commit,
abort, manifest; and the one mapping of failures to messages.

A backend fills in the methods its side needs (:mod:`.local`, :mod:`.s3`, :mod:`.fsspec_fs`);
the transfer (:mod:`.transfer`) asks only this interface, never which backend it has.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from nbplugins import paths
from nbplugins.errors import StorageError
from nbplugins.retry import Retry, foreign_as, is_tls_error, is_transient
from nbplugins.storage import Location
from nbplugins.storage.s3 import storage_error
from nbplugins.storage.staging import manifest
from nbplugins.storage.staging.checksums import PartHash
from nbplugins.storage.staging.job import Job, Reread
from nbplugins.storage.staging.plan import Entry, Have, Listing

T = TypeVar("T")
TMP_MARK = ".nbp-part-"
#: S3 error codes a later attempt may not see (a body cut short, a busy server).
RETRYABLE_CODES = frozenset({"BadDigest", "RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable"})


def retryable(exc: BaseException) -> bool:
    """The retry predicate of transfers: transient failures and the S3 codes that are; never our own StorageError."""
    if isinstance(exc, StorageError):
        return False
    response = getattr(exc, "response", {}) or {}
    if isinstance(response, dict) and response.get("Error", {}).get("Code") in RETRYABLE_CODES:
        return True
    return is_transient(exc)


def disk_error(path: str, exc: OSError) -> StorageError:
    """A local write that failed (read-only, full disk), said as what it left behind: nothing."""
    return StorageError(f"{path}: cannot write: {exc.strerror or exc} (nothing was left at the destination)")


def guarded(retry: Retry, fn: Callable[[], T], what: str, *, disk: bool = False) -> T:
    """``fn`` through the retry policy; a final failure becomes one StorageError naming ``what``.

    nbplugins' own errors pass as they are; with ``disk``, an OSError is a local write that
    failed (but a TLS failure, an OSError too, is said as one).
    """

    def convert(exc: Exception) -> BaseException:
        if disk and isinstance(exc, OSError) and not is_tls_error(exc):
            return disk_error(what, exc)
        return storage_error(exc, what)

    return retry.call(fn, what=what, map_error=foreign_as(convert))


class Endpoint:
    """One side of a transfer (source or destination) on one backend; subclasses override what differs."""

    #: The files are on this machine: checksums are computed by reading them, not taken from a server.
    local = False
    #: Parts of one file may be written at once (else :meth:`copy` moves a file in one stream).
    parallel = True
    #: The smallest part a multipart upload here takes, and how messages name the backend.
    min_part_size = 0
    kind = "fsspec"

    def __init__(self, loc: Location, retry: Retry) -> None:
        self.loc = loc
        self.retry = retry

    @property
    def url(self) -> str:
        """The URL this side was given."""
        return self.loc.url

    @property
    def path(self) -> str:
        """The backend's path of this side (``bucket/key`` for S3, a local path, ...)."""
        return self.loc.path

    def join(self, *parts: str) -> str:
        """The backend's path of ``parts`` below this side."""
        return self.loc.join(*parts)

    def url_of(self, path: str) -> str:
        """How messages name a path of this backend."""
        return self.loc.url_of(path)

    def close(self) -> None:
        """Release connections and clients (the transfer is over)."""

    # -- as a source

    def list(self) -> Listing:
        """Every file below this side (or this one file), with the manifest of a directory."""
        raise NotImplementedError

    def read(self, path: str, offset: int, length: int) -> Iterator[bytes | memoryview]:
        """Bytes ``[offset, offset + length)`` of a file, in blocks (a view is valid until the next block)."""
        raise NotImplementedError

    def read_file(self, path: str) -> bytes:
        """A whole small file (a manifest)."""
        raise NotImplementedError

    def read_manifest(self) -> dict[str, Any]:
        """This side's manifest entries by relative path ({} when there is none or it cannot be read)."""
        try:
            return manifest.parse(self.read_file(self.join(manifest.MANIFEST)))
        except Exception:  # noqa: BLE001 - no manifest is a normal state
            return {}

    def local_file(self, path: str) -> str | None:
        """The local file behind ``path``, when this side is the local disk (hashed in place)."""
        return None

    def reread_source(self, path: str) -> Reread | None:
        """Reads a source file again for an ordered whole-file hash, if that is cheap here (local files)."""
        return None

    # -- as a destination

    def is_dir_target(self) -> bool:
        """True when this destination names a directory (a trailing ``/``, or a local folder)."""
        return self.url.endswith("/")

    def check_dir(self, src_url: str) -> None:
        """Refuse a destination that cannot take a directory of files."""

    def check_inside(self, rel: str, src_url: str) -> None:
        """Refuse a relative path that would land outside this destination."""

    def existing(self, entries: list[Entry]) -> dict[str, Have]:
        """What is already at the destination: {path: (size, etag, part_size)}."""
        raise NotImplementedError

    def files_below(self, have: dict[str, Have]) -> list[str]:
        """Every file under this destination (``have``: what :meth:`existing` found)."""
        raise NotImplementedError

    def extras(self, entries: list[Entry], have: dict[str, Have]) -> list[str]:
        """Files under the destination that the source does not have (what a mirroring sync deletes)."""
        keep = {e.dest for e in entries} | {self.join(manifest.MANIFEST)}
        return sorted(p for p in self.files_below(have) if p not in keep and TMP_MARK not in p)

    def remove(self, path: str) -> None:
        """Delete one file (a mirroring sync)."""
        raise NotImplementedError

    def tmp_name(self, target: str) -> str:
        """A temporary name beside ``target`` that listings skip (``.NAME.nbp-part-XXXX``)."""
        head, _, name = target.rpartition("/")
        temp = paths.temp_name(name, f"{TMP_MARK}{uuid.uuid4().hex[:8]}")
        return f"{head}/{temp}" if head else temp

    def part_share(self, concurrency: int) -> int:
        """How many of the ``concurrency`` slots one file's parts may take while other files wait.

        A remote server may ingest a multipart upload as one ordered stream (rclone): a quarter
        of the slots per file keeps the rest busy with other files.
        """
        return max(2, concurrency // 4)

    def open(self, job: Job) -> None:
        """Prepare to receive ``job``'s parts (a temporary file, a multipart upload)."""

    def write_part(self, job: Job, index: int, source: Endpoint, hashes: PartHash) -> None:
        """Move part ``index`` of ``job`` from ``source``, feeding its bytes to ``hashes``."""
        raise NotImplementedError

    def reread_written(self, job: Job) -> Reread | None:
        """Reads what was written so far for an ordered whole-file hash, if this side can."""
        return None

    def commit(self, job: Job) -> str | None:
        """Publish a verified file under its name, atomically; the server's final ETag if it gives one."""
        raise NotImplementedError

    def abort(self, job: Job) -> None:
        """Drop what was written of ``job``; the target keeps what it had."""

    def release(self, job: Job) -> None:
        """Leave an unfinished ``job`` when the transfer stops (resumable state may stay)."""
        self.abort(job)

    def copy(self, job: Job, source: Endpoint) -> tuple[str, str]:
        """Move a whole file in one stream (non-parallel backends): (S3-style ETag, XXH3-128)."""
        raise NotImplementedError

    def write_manifest(self, path: str, body: bytes) -> None:
        """Write the manifest at ``path`` whole or not at all."""
        raise NotImplementedError
