"""Staging: get / put / sync between local disk, S3 and Onedata; concurrent, verified, atomic, resumable.

A transfer is planned (list the source, map each file to its destination, refuse paths that
escape it), files already present with the same size and checksum are skipped, and the rest
move in parts on a thread pool: multipart uploads and ranged downloads, at most
``concurrency`` parts in flight, so memory stays near ``concurrency x part_size`` whatever
the file size. Every part goes through :mod:`nbplugins.retry`; every file is verified
(size; MD5 against the server's ETag, or the XXH3-128 a manifest recorded when the set was
published, which costs a twentieth of MD5's CPU) and published atomically
(S3 multipart completes at once; local files are written under a temporary name and
renamed). A directory transfer writes ``_MANIFEST.json`` (sizes and checksums) last, so a
reader can tell a complete set from a partial one.

The work is a generator of :class:`Event`; :func:`run` consumes it with tqdm bars, and
templates, reports and services can consume the same iterator.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import posixpath
import queue
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from nbplugins import paths, storage
from nbplugins.errors import (
    Cancelled,
    NbpluginsError,
    StorageError,
    TransientError,
    ValidationError,
)
from nbplugins.retry import Retry, describe, is_transient
from nbplugins.storage import Location

log = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"
MANIFEST_FORMAT = "nbplugins-manifest/1"
TMP_MARK = ".nbp-part-"
META_PART_SIZE = "nbplugins-part-size"
CHUNK = 1 << 20
MAX_PARTS = 10_000
MAX_LIST_SPLIT = 64  # top-level folders listed in parallel; more than this: one flat listing


# ----------------------------------------------------------------------------- events


@dataclass
class Event:
    """One step of a transfer.

    ``kind``: ``plan`` (totals known), ``skip`` (already at the destination), ``bytes``
    (``size`` bytes moved), ``file`` (one file published and verified), ``retry`` (a
    checksum mismatch re-sent a file), ``delete`` (a file the source does not have, removed
    by a mirroring sync), ``keep`` (a different file at the destination, left alone because
    the transfer does not clobber), ``manifest`` (manifest written), ``done`` (totals). A
    ``file`` event's ``message`` is ``replaced`` when it overwrote a different file.
    """

    kind: str
    path: str = ""
    size: int = 0
    files: int = 0
    message: str = ""


@dataclass
class Summary:
    """What a transfer did."""

    files: int = 0
    bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    replaced: int = 0  # files that were at the destination, differed, and were overwritten
    kept: int = 0  # files that were at the destination, differed, and were left alone (no clobber)
    deleted: int = 0
    seconds: float = 0.0
    manifest: str | None = None

    @property
    def rate(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- checksums


def etag_of(digests: list[bytes]) -> str:
    """The S3 ETag of data whose parts have these MD5 digests (plain MD5 for one part)."""
    if len(digests) == 1:
        return digests[0].hex()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def part_count(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size))


def hasher(name: str) -> Any:
    """A streaming hash object: ``md5`` (S3 ETags) or ``xxh3`` (XXH3-128, manifests)."""
    if name == "xxh3":
        import xxhash

        return xxhash.xxh3_128()
    return hashlib.md5()


def file_xxh3(path: str) -> str:
    """The XXH3-128 of a local file (hex)."""
    whole = hasher("xxh3")
    with open(path, "rb") as handle:
        while block := handle.read(8 * CHUNK):
            whole.update(block)
    return whole.hexdigest()


def file_etags(path: str, part_size: int) -> tuple[str, str]:
    """(plain MD5, S3 multipart ETag for ``part_size``) of a local file, in one read."""
    whole = hashlib.md5()
    digests: list[bytes] = []
    with open(path, "rb") as handle:
        while True:
            block = handle.read(part_size)
            if not block and digests:
                break
            whole.update(block)
            digests.append(hashlib.md5(block).digest())
            if len(block) < part_size:
                break
    return whole.hexdigest(), etag_of(digests)


def guess_part_size(size: int, etag: str) -> int | None:
    """The part size a multipart ETag ``...-N`` was likely made with (whole MiB), if any."""
    if "-" not in etag:
        return None
    try:
        parts = int(etag.rsplit("-", 1)[1])
    except ValueError:
        return None
    if parts < 1:
        return None
    mib = 1 << 20
    guess = math.ceil(size / parts / mib) * mib
    return guess if part_count(size, guess) == parts else None


class ChecksumMismatch(TransientError):
    """Bytes arrived that do not match their checksum; retried, then reported."""


# ----------------------------------------------------------------------------- plan


@dataclass
class Entry:
    """One file to move: where from, where to, its size and expected checksum."""

    rel: str
    src: str
    dest: str
    size: int
    etag: str | None = None  # expected S3-style MD5 (from the source)
    part_size: int | None = None  # part size of a multipart etag
    xxh3: str | None = None  # expected XXH3-128 of the whole file (from the source's manifest)
    result_etag: str | None = None
    result_part_size: int | None = None
    result_xxh3: str | None = None
    attempts: int = 0
    replaces: bool = False  # a different file is at the destination and this one overwrites it


def _clean(etag: Any) -> str | None:
    if not isinstance(etag, str) or not etag:
        return None
    etag = etag.strip().strip('"').lower()
    return etag if all(c in "0123456789abcdef-" for c in etag) and len(etag) >= 32 else None


def _clean_xxh3(value: Any) -> str | None:
    if isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value):
        return value
    return None


def _safe_rel(rel: str, where: str) -> str:
    """A relative path that names one file inside the destination; else a StorageError.

    Refuses absolute paths, ``..``, NUL and empty or ``.`` parts (``a//b``, ``q/.``): an S3
    key can be any string, a local file name cannot. Called for every file of the plan before
    anything is written.
    """
    rel = rel.replace("\\", "/")
    try:
        paths.check_relative(rel, "path")
    except ValidationError as exc:
        raise StorageError(f"{where}: {exc}: it escapes the destination; nothing was transferred") from None
    try:
        paths.check_relative(rel, "path", strict=True)
    except ValidationError as exc:
        raise StorageError(f"{where}: {exc}; nothing was transferred") from None
    return rel


def _list_source(loc: Location, retry: Retry) -> tuple[list[tuple[str, str, int, str | None, int | None]], bool,
                                                      dict[str, Any]]:
    """[(rel, path, size, etag, part_size)], whether the source is a directory/prefix, and its manifest."""
    if loc.scheme == "s3":
        return _list_s3(loc, retry)
    listed, is_dir = _list_local(loc) if loc.is_local else _list_fsspec(loc)
    return listed, is_dir, _read_manifest(loc, retry) if is_dir else {}


def _list_local(loc: Location) -> tuple[list[Any], bool]:
    path = loc.path
    if os.path.isfile(path):
        return [(os.path.basename(path), path, os.path.getsize(path), None, None)], False
    if not os.path.isdir(path):
        raise StorageError(f"{loc.url}: no such file or directory")
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            if TMP_MARK in name:
                continue
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            found.append((rel, full, os.path.getsize(full), None, None))
    return found, True


def _s3_call(fn: Callable[[], Any], what: str, retry: Retry) -> Any:
    from nbplugins.storage.s3 import storage_error

    try:
        return retry.call(fn, what=what)
    except NbpluginsError:
        raise
    except Exception as exc:
        raise storage_error(exc, what) from None


def _bucket_key(path: str) -> tuple[str, str]:
    bucket, _, key = path.partition("/")
    return bucket, key


def _list_tree(client: Any, bucket: str, prefix: str, hints: set[str], retry: Retry, what: str) -> list[dict[str, Any]]:
    """Every object below ``prefix``, sorted by key: one listing per top-level folder, in parallel.

    A flat listing is one request after another, and a server that computes ETags on the fly
    (``rclone serve s3`` hashes each new object when it is first listed) then hashes the whole
    tree on one core. Listing the top level with ``Delimiter='/'`` and each top-level folder
    on its own (``hints``, e.g. from the manifest, start before the top level answers) gives
    the same objects with the work spread over several requests.
    """

    def pages(sub: str, **extra: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            call = {"Bucket": bucket, "Prefix": sub, **extra, **({"ContinuationToken": token} if token else {})}
            page = _s3_call(lambda kw=call: client.list_objects_v2(**kw), what, retry)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def flat(sub: str) -> list[dict[str, Any]]:
        return [obj for page in pages(sub) for obj in page.get("Contents", [])]

    def top() -> tuple[list[dict[str, Any]], list[str]]:
        objs, folders = [], []
        for page in pages(prefix, Delimiter="/"):
            objs.extend(page.get("Contents", []))
            folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []) if p.get("Prefix"))
        return objs, folders

    with ThreadPoolExecutor(8, thread_name_prefix="nbp-list") as pool:
        started = {f"{prefix}{h}/": pool.submit(flat, f"{prefix}{h}/") for h in sorted(hints)[:MAX_LIST_SPLIT]}
        objs, folders = top()
        if len(folders) > MAX_LIST_SPLIT:  # many small folders: one flat listing is fewer requests
            for future in started.values():
                future.cancel()
            return flat(prefix)
        for folder in folders:
            if folder not in started:
                started[folder] = pool.submit(flat, folder)
        found = {obj["Key"]: obj for obj in objs}
        for folder, future in started.items():
            if folder in folders:
                found.update((obj["Key"], obj) for obj in future.result())
            else:
                future.cancel()
    return [found[k] for k in sorted(found)]


def _list_s3(loc: Location, retry: Retry) -> tuple[list[Any], bool, dict[str, Any]]:
    client = _client(loc)
    bucket, key = _bucket_key(loc.path)
    if key and not key.endswith("/"):
        try:
            head = retry.call(lambda: client.head_object(Bucket=bucket, Key=key), what=f"HEAD {loc.url}")
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                from nbplugins.storage.s3 import storage_error

                raise storage_error(exc, loc.url) from None
        else:
            part = head.get("Metadata", {}).get(META_PART_SIZE)
            return [(posixpath.basename(key), loc.path, head["ContentLength"], _clean(head.get("ETag")),
                     int(part) if part and part.isdigit() else None)], False, {}
    prefix = key if not key or key.endswith("/") else key + "/"
    manifest = _read_manifest(loc, retry)
    hints = {rel.split("/", 1)[0] for rel in manifest if "/" in rel}
    found = []
    for obj in _list_tree(client, bucket, prefix, hints, retry, f"list {loc.url}"):
        rel = obj["Key"][len(prefix):]
        if not rel or rel.endswith("/"):
            continue
        found.append((rel, f"{bucket}/{obj['Key']}", obj["Size"], _clean(obj.get("ETag")), None))
    if not found:
        raise StorageError(f"{loc.url}: no such object or prefix in bucket {bucket!r}")
    return found, True, manifest


def _list_fsspec(loc: Location) -> tuple[list[Any], bool]:
    fs = loc.fs
    try:
        info = fs.info(loc.path)
    except FileNotFoundError:
        raise StorageError(f"{loc.url}: no such file or directory") from None
    except Exception as exc:
        raise StorageError(f"{loc.url}: {describe(exc)}") from None
    if info.get("type") != "directory":
        return [(posixpath.basename(loc.path.rstrip("/")), info["name"], info.get("size") or 0,
                 _clean(info.get("ETag") or info.get("etag")), None)], False
    base = info["name"].rstrip("/")
    found = []
    for path, item in sorted(fs.find(loc.path, detail=True).items()):
        if item.get("type") == "directory" or TMP_MARK in path:
            continue
        rel = path[len(base):].lstrip("/") if path.startswith(base) else posixpath.basename(path)
        found.append((rel, path, item.get("size") or 0, _clean(item.get("ETag") or item.get("etag")), None))
    return found, True


def _read_manifest(loc: Location, retry: Retry) -> dict[str, Any]:
    """The source's manifest entries by relative path ({} when there is none)."""
    path = loc.join(MANIFEST)
    try:
        if loc.scheme == "s3":
            bucket, key = _bucket_key(path)
            body = retry.call(lambda: _client(loc).get_object(Bucket=bucket, Key=key)["Body"].read(),
                              what=f"read {MANIFEST}")
        elif loc.is_local:
            with open(path, "rb") as handle:
                body = handle.read()
        else:
            body = loc.fs.cat_file(path)
        data = json.loads(body)
    except Exception:
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None
    return files if isinstance(files, dict) else {}


# ----------------------------------------------------------------------------- clients


_clients_lock = threading.Lock()


def _client(loc: Location) -> Any:
    """The S3 client of a location: the direct wire when it can serve, else botocore (uploads carry Content-MD5)."""
    wire = _wire(loc)
    if wire is not None:
        return wire  # answers the calls staging makes, without botocore
    with _clients_lock:
        client = loc.__dict__.get("_client")
        if client is None:
            client = loc.__dict__["_client"] = loc.s3.transfer_client()
        return client


_buffers = threading.local()


def _buffer() -> memoryview:
    """This thread's 1 MiB scratch buffer (hashing parts without a fresh allocation per block)."""
    buf = _buffers.__dict__.get("buf")
    if buf is None:
        buf = _buffers.buf = memoryview(bytearray(CHUNK))
    return buf


def _wire(loc: Location) -> Any:
    """The direct body path (:mod:`nbplugins.storage.s3wire`) of an S3 location, or None for botocore's."""
    from nbplugins.storage import s3wire

    with _clients_lock:
        if "_wire" not in loc.__dict__:
            loc.__dict__["_wire"] = s3wire.ObjectWire(loc.s3) if s3wire.usable(loc.s3) else None
        return loc.__dict__["_wire"]


# ----------------------------------------------------------------------------- endpoints


class _Job:
    """State of one file in flight: parts done, digests, destination handle."""

    def __init__(self, entry: Entry, part_size: int, *, part_md5: bool = True, whole: str | None = None) -> None:
        self.entry = entry
        self.part_size = part_size
        self.parts = part_count(entry.size, part_size)
        self.digests: list[bytes | None] = [None] * self.parts
        self.etags: list[str | None] = [None] * self.parts
        self.done = 0
        self.lock = threading.Condition()
        self.handle: Any = None
        self.failed = False
        self.part_md5 = part_md5  # MD5 of each part (Content-MD5, multipart ETags)
        # whole: a whole-file hash ("md5" or "xxh3") is wanted. A one-part file is hashed as it
        # moves (``inline``); a larger one is hashed in order (ordered), each part as soon as it
        # and all before it are done, read back with a pread from the page cache, overlapping
        # the transfer instead of following it.
        self.whole_name = whole
        self.ordered = whole is not None and self.parts > 1
        self.whole = hasher(whole) if self.ordered and whole else None
        self.inline: str | None = None
        self.resumed: dict[int, str] = {}  # part number -> ETag already on the server (a resumed upload)
        self.hashed = 0  # parts fed to ``whole``
        self.hashing = False
        self.hash_error: BaseException | None = None

    def part_range(self, index: int) -> tuple[int, int]:
        offset = index * self.part_size
        return offset, min(self.part_size, self.entry.size - offset)

    def mark(self, index: int, digest: bytes) -> bool:
        with self.lock:
            self.digests[index] = digest
            self.done += 1
            return self.done == self.parts

    def advance(self, read: Callable[[int, int], bytes]) -> None:
        """Feed every written part that extends the hashed prefix to the whole-file MD5 (one thread at a time)."""
        while True:
            with self.lock:
                if (self.hashing or self.hash_error or self.hashed >= self.parts
                        or self.digests[self.hashed] is None):
                    return
                self.hashing = True
                index = self.hashed
            try:
                offset, length = self.part_range(index)
                end = offset + length
                while offset < end:
                    block = read(offset, min(end - offset, 4 * CHUNK))
                    if not block:
                        raise StorageError(f"{self.entry.dest}: temporary file shorter than written")
                    self.whole.update(block)  # type: ignore[union-attr]
                    offset += len(block)
            except BaseException as exc:
                with self.lock:
                    self.hash_error, self.hashing = exc, False
                    self.lock.notify_all()
                raise
            with self.lock:
                self.hashed, self.hashing = index + 1, False
                self.lock.notify_all()

    def whole_hex(self) -> str | None:
        """The whole-file hash (hex), once every part is hashed (waits for the thread hashing the last ones)."""
        if not self.ordered:
            return self.inline
        with self.lock:
            self.lock.wait_for(lambda: self.hashed >= self.parts or self.hash_error is not None)
            if self.hash_error is not None:
                raise self.hash_error
        return self.whole.hexdigest()  # type: ignore[union-attr]


class _LocalSource:
    def __init__(self, loc: Location) -> None:
        self.loc = loc

    def read(self, path: str, offset: int, length: int) -> Iterator[bytes]:
        fd = os.open(path, os.O_RDONLY)
        try:
            pos, end = offset, offset + length
            while pos < end:
                block = os.pread(fd, min(end - pos, 64 * CHUNK), pos)
                if not block:
                    raise StorageError(f"{path}: file shrank while it was being sent")
                yield block
                pos += len(block)
        finally:
            os.close(fd)

    def read_back(self, job: _Job) -> Callable[[int, int], bytes]:
        """pread from the source file (an upload's ordered whole-file hash reads parts back from the page cache)."""
        path = job.entry.src

        def read(offset: int, length: int) -> bytes:
            with open(path, "rb", buffering=0) as handle:
                return os.pread(handle.fileno(), length, offset)

        return read


class _S3Source:
    """Ranged GETs: over :mod:`s3wire` (blocks are views of a reused buffer) or botocore."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        self.client = _client(loc)
        self.wire = _wire(loc)

    def read(self, path: str, offset: int, length: int) -> Iterator[bytes | memoryview]:
        if length == 0:
            return
        bucket, key = _bucket_key(path)
        if self.wire is not None:
            yield from self.wire.get(bucket, key, offset, length)
            return
        response = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
        body = response["Body"]
        try:
            got = 0
            while got < length:
                block = body.read(min(CHUNK, length - got))
                if not block:
                    raise TransientError(f"s3://{path}: connection closed after {got} of {length} bytes")
                got += len(block)
                yield block
        finally:
            body.close()


class _FsspecSource:
    def __init__(self, loc: Location) -> None:
        self.loc = loc

    def read(self, path: str, offset: int, length: int) -> Iterator[bytes]:
        pos, end = offset, offset + length
        while pos < end:
            block = self.loc.fs.cat_file(path, start=pos, end=min(end, pos + 8 * CHUNK))
            if not block:
                raise TransientError(f"{self.loc.scheme}://{path}: short read at {pos}")
            yield block
            pos += len(block)


class _LocalDest:
    """Parallel pwrite into ``.NAME.nbp-part-XXXX`` beside the target, renamed when verified."""

    parallel = True
    needs_bytes = False

    def __init__(self, loc: Location) -> None:
        self.loc = loc

    def open(self, job: _Job) -> None:
        target = job.entry.dest
        directory = os.path.dirname(target) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(f"{directory}: a file is in the way where a directory is expected") from None
        except OSError as exc:  # a read-only destination, a full disk
            raise _disk_error(directory, exc) from None
        if os.path.isdir(target):
            raise StorageError(f"{target}: a directory is in the way where a file is expected")
        tmp = os.path.join(directory, paths.temp_name(os.path.basename(target), f"{TMP_MARK}{uuid.uuid4().hex[:8]}"))
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise _disk_error(directory, exc) from None
        job.handle = (fd, tmp)
        try:
            os.ftruncate(fd, job.entry.size)
        except OSError as exc:
            self.abort(job)
            raise _disk_error(target, exc) from None

    def write_at(self, job: _Job, offset: int, block: bytes) -> None:
        fd, tmp = job.handle
        view = memoryview(block)
        while view:
            try:
                written = os.pwrite(fd, view, offset)
            except OSError as exc:
                raise _disk_error(job.entry.dest, exc) from None
            view = view[written:]
            offset += written

    def commit(self, job: _Job) -> None:
        fd, tmp = job.handle
        os.close(fd)
        job.handle = (None, tmp)
        if os.path.getsize(tmp) != job.entry.size:
            raise ChecksumMismatch(f"{job.entry.dest}: size {os.path.getsize(tmp)}, expected {job.entry.size}")
        try:
            os.replace(tmp, job.entry.dest)
        except OSError as exc:
            raise _disk_error(job.entry.dest, exc) from None

    def read_back(self, job: _Job) -> Callable[[int, int], bytes]:
        """pread from the temporary file (the ordered whole-file MD5 reads parts back from the page cache)."""
        fd = job.handle[0]
        return lambda offset, length: os.pread(fd, length, offset)

    def abort(self, job: _Job) -> None:
        if not job.handle:
            return
        fd, tmp = job.handle
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        job.handle = None


def _disk_error(path: str, exc: OSError) -> StorageError:
    return StorageError(f"{path}: cannot write: {exc.strerror or exc} (nothing was left at the destination)")


class _S3Dest:
    """Single PUT for one part, multipart upload otherwise; both atomic at the final key.

    A multipart upload from a local file is resumable: its upload id is kept in a 0600 state
    file until it completes. When a run stops (Ctrl-C, a killed server, a network gone past
    the deadline), the parts already sent stay on the server; the next run of the same file
    (same size, mtime and part size) lists them and sends only the parts whose MD5 differs.
    An upload whose source changed is aborted and started again.
    """

    parallel = True
    needs_bytes = True

    def __init__(self, loc: Location, retry: Retry) -> None:
        self.loc = loc
        self.client = _client(loc)
        self.wire = _wire(loc)
        self.retry = retry

    def open(self, job: _Job) -> None:
        if job.parts == 1:
            return
        bucket, key = _bucket_key(job.entry.dest)
        if self._resume(job, bucket, key):
            return
        response = _s3_call(
            lambda: self.client.create_multipart_upload(
                Bucket=bucket, Key=key, Metadata={META_PART_SIZE: str(job.part_size)}),
            f"start upload of s3://{job.entry.dest}", self.retry)
        job.handle = response["UploadId"]
        source = self._source_stamp(job)
        if source is not None:
            from nbplugins import secrets

            secrets.write_private(self._state_path(job), json.dumps(
                {"upload_id": job.handle, "part_size": job.part_size, **source}))

    # -- resumable uploads

    def _state_path(self, job: _Job) -> str:
        from nbplugins import config

        where = f"{self.loc.s3.endpoint_url or 'aws'}|{job.entry.dest}"
        return str(config.cache_root() / "uploads" / f"{hashlib.sha256(where.encode()).hexdigest()[:32]}.json")

    @staticmethod
    def _source_stamp(job: _Job) -> dict[str, Any] | None:
        """What identifies the source file's content cheaply (local files only)."""
        try:
            st = os.stat(job.entry.src)
        except (OSError, TypeError):
            return None
        return {"src": os.path.realpath(job.entry.src), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _resume(self, job: _Job, bucket: str, key: str) -> bool:
        """Take over an earlier run's upload of this very file, if there is one; True if taken."""
        path = self._state_path(job)
        try:
            with open(path) as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            return False
        stamp = self._source_stamp(job)
        upload_id = state.get("upload_id") if isinstance(state, dict) else None
        same = (stamp is not None and isinstance(upload_id, str) and state.get("part_size") == job.part_size
                and all(state.get(k) == v for k, v in stamp.items()))
        if same:
            try:
                job.resumed = self._uploaded_parts(bucket, key, upload_id)
                job.handle = upload_id
                log.info("resuming the upload of %s: %d of %d parts already there", job.entry.rel,
                         len(job.resumed), job.parts)
                return True
            except Exception as exc:  # noqa: BLE001 - gone or refused: start a new upload
                log.info("cannot resume the upload of %s (%s); starting again", job.entry.rel, describe(exc))
        elif isinstance(upload_id, str):
            with contextlib.suppress(Exception):  # the file changed: its old parts are of no use
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return False

    def _uploaded_parts(self, bucket: str, key: str, upload_id: str) -> dict[int, str]:
        parts: dict[int, str] = {}
        marker: int | None = None
        while True:
            page = self.retry.call(lambda m=marker: self.client.list_parts(
                Bucket=bucket, Key=key, UploadId=upload_id, **({"PartNumberMarker": m} if m else {})),
                what=f"list uploaded parts of s3://{bucket}/{key}")
            parts.update((p["PartNumber"], p["ETag"]) for p in page.get("Parts", []))
            marker = page.get("NextPartNumberMarker")
            if not page.get("IsTruncated") or not marker:
                return parts

    def _already_there(self, job: _Job, index: int, digest: bytes) -> bool:
        """True when a resumed upload already holds this part with this MD5 (then it is not sent)."""
        raw = job.resumed.get(index + 1)
        if raw and _clean(raw) == digest.hex():
            job.etags[index] = raw
            return True
        return False

    def _forget(self, job: _Job) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._state_path(job))

    def write_part(self, job: _Job, index: int, data: bytes, digest: bytes) -> None:
        if self._already_there(job, index, digest):
            return
        bucket, key = _bucket_key(job.entry.dest)
        md5 = base64.b64encode(digest).decode()
        upload = {"upload_id": job.handle, "part_number": index + 1} if job.parts > 1 else {}
        if self.wire is not None:
            raw = self.wire.put(bucket, key, data, md5, **upload)
        elif upload:
            raw = self.client.upload_part(Bucket=bucket, Key=key, UploadId=job.handle, PartNumber=index + 1,
                                          Body=data, ContentMD5=md5).get("ETag")
        else:
            raw = self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=md5).get("ETag")
        self._check_etag(job, index, raw, digest)

    def write_file_part(self, job: _Job, index: int, fd: int, offset: int, length: int, digest: bytes) -> None:
        """Like :meth:`write_part`, the bytes sent from an open local file by the kernel."""
        if self._already_there(job, index, digest):
            return
        bucket, key = _bucket_key(job.entry.dest)
        upload = {"upload_id": job.handle, "part_number": index + 1} if job.parts > 1 else {}
        raw = self.wire.put_file(bucket, key, fd, offset, length, base64.b64encode(digest).decode(), **upload)
        self._check_etag(job, index, raw, digest)

    def _check_etag(self, job: _Job, index: int, raw: str | None, digest: bytes) -> None:
        etag = _clean(raw)
        if etag and "-" not in etag and etag != digest.hex():
            raise ChecksumMismatch(f"s3://{job.entry.dest} part {index + 1}: server stored MD5 {etag}, sent {digest.hex()}")
        job.etags[index] = raw

    def commit(self, job: _Job) -> str | None:
        if job.parts == 1:
            return None
        bucket, key = _bucket_key(job.entry.dest)
        parts = [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(job.etags)]
        response = _s3_call(
            lambda: self.client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=job.handle,
                                                          MultipartUpload={"Parts": parts}),
            f"complete upload of s3://{job.entry.dest}", self.retry)
        job.handle = None
        self._forget(job)
        return _clean(response.get("ETag"))

    def abort(self, job: _Job) -> None:
        if job.handle:
            bucket, key = _bucket_key(job.entry.dest)
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=job.handle)
            job.handle = None
            self._forget(job)

    def release(self, job: _Job) -> None:
        """Leave an unfinished upload for the next run when it can resume it, else abort it."""
        if job.handle and job.parts > 1 and os.path.exists(self._state_path(job)):
            job.handle = None
            return
        self.abort(job)

    def write_manifest(self, path: str, body: bytes) -> None:
        bucket, key = _bucket_key(path)
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        _s3_call(lambda: self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5,
                                                ContentType="application/json"),
                 f"write s3://{path}", self.retry)


class _FsspecDest:
    """Sequential write to a temporary name, then a rename (Onedata and other fsspec backends)."""

    parallel = False
    needs_bytes = False

    def __init__(self, loc: Location) -> None:
        self.loc = loc

    def tmp_name(self, target: str) -> str:
        head, name = posixpath.split(target)
        return posixpath.join(head, paths.temp_name(name, f"{TMP_MARK}{uuid.uuid4().hex[:8]}"))

    def abort(self, job: _Job) -> None:
        if job.handle:
            with contextlib.suppress(Exception):
                self.loc.fs.rm_file(job.handle)
            job.handle = None

    def write_manifest(self, path: str, body: bytes) -> None:
        tmp = self.tmp_name(path)
        self.loc.fs.pipe_file(tmp, body)
        self.loc.fs.mv(tmp, path)


# ----------------------------------------------------------------------------- engine


class _Transfer:
    """Plans and runs one transfer as a generator of events."""

    def __init__(self, src: Location, dest: Location, *, concurrency: int | None, part_size: int | None,
                 retry: Retry | None, cancel: threading.Event | None, write_manifest: bool,
                 delete: bool = False, clobber: bool = True) -> None:
        self.src, self.dest = src, dest
        self.delete = delete
        self.clobber = clobber
        s3 = dest.s3 or src.s3
        for what, value in (("part size", part_size), ("concurrency", concurrency)):
            if value is not None and value < 0:  # refused here, not retried part after part
                raise StorageError(f"{what} {value}: must be a positive number; nothing was transferred")
        self.concurrency = concurrency or (s3.concurrency if s3 else 8)
        self.part_size = part_size or (s3.part_size if s3 else 16 * CHUNK)
        if self.part_size < 5 * CHUNK and dest.scheme == "s3":
            raise StorageError("part size must be at least 5 MiB for S3 multipart uploads")
        self.cancel = cancel or threading.Event()
        self.retry = (retry or Retry.from_config()).with_(cancel=self.cancel, retryable=_retryable)
        self.write_manifest_file = write_manifest
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.reader = _LocalSource(src) if src.is_local else _S3Source(src) if src.scheme == "s3" else _FsspecSource(src)
        if dest.is_local:
            self.writer: Any = _LocalDest(dest)
        elif dest.scheme == "s3":
            self.writer = _S3Dest(dest, self.retry)
        else:
            self.writer = _FsspecDest(dest)

    # -- planning

    def plan(self) -> tuple[list[Entry], bool]:
        listed, is_dir, manifest = _list_source(self.src, self.retry)
        dest_is_dir = is_dir or self._dest_is_dir()
        if is_dir:
            self._check_dest_dir()
        entries: list[Entry] = []
        seen: set[str] = set()
        for rel, path, size, etag, part in listed:
            if is_dir and rel == MANIFEST:
                continue
            rel = _safe_rel(rel, self.src.url) if dest_is_dir else rel
            known = manifest.get(rel)
            xxh3 = None
            if isinstance(known, dict) and known.get("size") == size:
                # the publisher's manifest is the reference: bytes that differ from it are an error
                etag, part = _clean(known.get("etag")) or etag, known.get("part_size") or part
                xxh3 = _clean_xxh3(known.get("xxh3_128"))
            if etag and "-" in etag and not part:
                part = guess_part_size(size, etag)
            dest = self.dest.join(rel) if dest_is_dir else self.dest.path
            if self.dest.is_local and dest_is_dir:  # links followed: a folder that links out is refused too
                try:
                    paths.inside(self.dest.path, rel, "path")
                except ValidationError as exc:
                    raise StorageError(f"{self.src.url}: {exc}: it escapes the destination; "
                                       "nothing was transferred") from None
            entries.append(Entry(rel, path, dest, size, etag, part, xxh3))
            seen.add(rel)
        for entry in entries:  # "a" as a file and "a/b" below it cannot both exist
            parent = posixpath.dirname(entry.rel)
            while parent:
                if parent in seen:
                    raise StorageError(f"{self.src.url}: {parent!r} is both a file and a directory; nothing was transferred")
                parent = posixpath.dirname(parent)
        if is_dir and not entries:  # a wrong prefix, or a set whose files are gone
            only = any(rel == MANIFEST for rel, *_ in listed)
            raise StorageError(f"{self.src.url}: holds {'only ' + MANIFEST + ' and ' if only else ''}no files to "
                               "transfer; check the path (nothing was transferred)")
        return entries, is_dir

    def _dest_is_dir(self) -> bool:
        if self.dest.url.endswith("/"):
            return True
        if self.dest.is_local:
            return os.path.isdir(self.dest.path)
        return False

    def _check_dest_dir(self) -> None:
        if self.dest.is_local and os.path.exists(self.dest.path) and not os.path.isdir(self.dest.path):
            raise StorageError(f"{self.dest.path}: is a file, expected a directory for {self.src.url}")
        if self.dest.scheme == "s3":
            bucket, _ = _bucket_key(self.dest.path)
            _s3_call(lambda: _client(self.dest).head_bucket(Bucket=bucket), f"bucket s3://{bucket}", self.retry)

    def existing(self, entries: list[Entry]) -> dict[str, tuple[int, str | None, int | None]]:
        """What is already at the destination: {dest path: (size, etag, part_size)}."""
        if self.dest.is_local:
            out = {}
            for e in entries:
                with contextlib.suppress(OSError):
                    if os.path.isfile(e.dest):
                        out[e.dest] = (os.path.getsize(e.dest), None, None)
            return out
        if self.dest.scheme == "s3":
            bucket, key = _bucket_key(self.dest.path)
            client = _client(self.dest)
            out = {}
            if len(entries) == 1 and not self.dest.url.endswith("/"):
                try:
                    head = client.head_object(Bucket=bucket, Key=_bucket_key(entries[0].dest)[1])
                    part = head.get("Metadata", {}).get(META_PART_SIZE)
                    out[entries[0].dest] = (head["ContentLength"], _clean(head.get("ETag")),
                                            int(part) if part and part.isdigit() else None)
                except Exception:
                    pass
                return out
            prefix = key.rstrip("/") + "/" if key else ""
            hints = {e.rel.split("/", 1)[0] for e in entries if "/" in e.rel}
            for obj in _list_tree(client, bucket, prefix, hints, self.retry, f"list {self.dest.url}"):
                out[f"{bucket}/{obj['Key']}"] = (obj["Size"], _clean(obj.get("ETag")), None)
            return out
        out = {}
        for e in entries:
            with contextlib.suppress(Exception):
                info = self.dest.fs.info(e.dest)
                if info.get("type") != "directory":
                    out[e.dest] = (info.get("size"), _clean(info.get("ETag") or info.get("etag")), None)
        return out

    def extras(self, entries: list[Entry], have: dict[str, Any]) -> list[str]:
        """Files under the destination that the source does not have (what a mirroring sync deletes)."""
        keep = {e.dest for e in entries} | {self.dest.join(MANIFEST)}
        if self.dest.is_local:
            found = [os.path.join(root, name) for root, _, names in os.walk(self.dest.path) for name in names]
        elif self.dest.scheme == "s3":
            found = list(have)
        else:
            found = [p for p, item in self.dest.fs.find(self.dest.path, detail=True).items()
                     if item.get("type") != "directory"]
        return sorted(p for p in found if p not in keep and TMP_MARK not in p)

    def remove(self, path: str) -> None:
        if self.dest.is_local:
            os.unlink(path)
        elif self.dest.scheme == "s3":
            bucket, key = _bucket_key(path)
            _client(self.dest).delete_object(Bucket=bucket, Key=key)
        else:
            self.dest.fs.rm_file(path)

    def unchanged(self, entry: Entry, have: tuple[int, str | None, int | None] | None,
                  dest_manifest: dict[str, Any]) -> bool:
        """True when the destination already holds this file (same size and checksum)."""
        if have is None or have[0] != entry.size:
            return False
        size, dest_etag, dest_part = have
        known = dest_manifest.get(entry.rel)
        if not dest_etag and isinstance(known, dict) and known.get("size") == size:
            dest_etag, dest_part = _clean(known.get("etag")), known.get("part_size")
        if self.dest.is_local:
            if entry.xxh3:
                ok = file_xxh3(entry.dest) == entry.xxh3
            elif not entry.etag:
                return False
            else:
                plain, multi = file_etags(entry.dest, entry.part_size or self.part_size)
                ok = entry.etag in (plain, multi)
        elif self.src.is_local and dest_etag:
            part = dest_part or guess_part_size(entry.size, dest_etag) or self.part_size
            plain, multi = file_etags(entry.src, part)
            ok = dest_etag in (plain, multi)
        else:
            ok = bool(entry.etag and dest_etag and entry.etag == dest_etag)
        if ok:
            entry.result_etag = dest_etag or entry.etag
            entry.result_part_size = dest_part if dest_etag and "-" in dest_etag else entry.part_size
            entry.result_xxh3 = entry.xxh3 or (_clean_xxh3(known.get("xxh3_128")) if isinstance(known, dict) else None)
        return ok

    # -- tasks

    def _part_size_for(self, entry: Entry) -> int:
        if self.dest.is_local and not entry.xxh3 and entry.etag and "-" in entry.etag and entry.part_size:
            return entry.part_size  # ranges aligned with the source's parts: verify per part
        size = self.part_size
        if part_count(entry.size, size) > MAX_PARTS:
            size = math.ceil(entry.size / MAX_PARTS / CHUNK) * CHUNK
        return size

    def _job(self, entry: Entry) -> _Job:
        """What to hash while moving ``entry``: MD5 per part and/or one whole-file hash."""
        part_size = self._part_size_for(entry)
        if not self.dest.is_local:  # uploads: Content-MD5 per part, and XXH3 of the whole for the manifest
            return _Job(entry, part_size, whole="xxh3" if self.src.is_local else None)
        if entry.xxh3:
            return _Job(entry, part_size, part_md5=False, whole="xxh3")
        if entry.etag and "-" not in entry.etag and entry.size > part_size:
            return _Job(entry, part_size, part_md5=False, whole="md5")
        return _Job(entry, part_size)

    def start(self, entry: Entry) -> list[Callable[[], Any]]:
        if not self.writer.parallel:
            return [lambda: self.sequential(entry)]
        job = self._job(entry)
        self.writer.open(job)
        self.jobs.add(job)
        if job.parts == 1:  # small file: open, move, verify, publish in one task (no hop via the driver)
            return self.part(job, 0)
        return [lambda i=i: self.part(job, i) for i in range(job.parts)]

    def part(self, job: _Job, index: int) -> list[Callable[[], Any]]:
        if job.failed:
            return []
        offset, length = job.part_range(index)
        entry = job.entry
        what = f"{entry.rel} part {index + 1}/{job.parts}" if job.parts > 1 else entry.rel
        inline = job.whole_name if job.parts == 1 else None

        def attempt() -> bytes:
            if self.writer.needs_bytes and self.src.is_local and self.writer.wire is not None:
                return self._send_range(job, index, offset, length, inline)
            if self.writer.needs_bytes:
                blocks = [b if isinstance(b, bytes) else bytes(b) for b in self.reader.read(entry.src, offset, length)]
                data = blocks[0] if len(blocks) == 1 else b"".join(blocks)
                if len(data) != length:
                    raise TransientError(f"{what}: read {len(data)} of {length} bytes")
                digest = hashlib.md5(data).digest()
                if inline:
                    whole = hasher(inline)
                    whole.update(data)
                    job.inline = whole.hexdigest()
                self.writer.write_part(job, index, data, digest)
                return digest
            md5 = hashlib.md5() if job.part_md5 else None
            whole = hasher(inline) if inline else None
            pos = offset
            for block in self.reader.read(entry.src, offset, length):
                self.writer.write_at(job, pos, block)
                if md5 is not None:
                    md5.update(block)
                if whole is not None:
                    whole.update(block)
                pos += len(block)
            if pos != offset + length:
                raise TransientError(f"{what}: read {pos - offset} of {length} bytes")
            if whole is not None:
                job.inline = whole.hexdigest()
            return md5.digest() if md5 is not None else b""

        digest = self._call(attempt, what)
        self.emit(Event("bytes", entry.rel, length))
        last = job.mark(index, digest)
        if job.ordered:
            side = self.writer if self.dest.is_local else self.reader
            try:
                job.advance(side.read_back(job))
            except OSError as exc:
                where = entry.dest if self.dest.is_local else entry.src
                raise StorageError(f"{where}: cannot read back for the checksum: {exc.strerror or exc}") from None
        if last:
            return self.finish(job)
        return []

    def _send_range(self, job: _Job, index: int, offset: int, length: int, inline: str | None) -> bytes:
        """Hash a local file's part through one reused buffer, then let the kernel send it (no copy held)."""
        buf = _buffer()
        md5 = hashlib.md5()
        whole = hasher(inline) if inline else None
        fd = os.open(job.entry.src, os.O_RDONLY)
        try:
            pos, end = offset, offset + length
            while pos < end:
                n = os.preadv(fd, [buf[:min(len(buf), end - pos)]], pos)
                if not n:
                    raise StorageError(f"{job.entry.src}: file shrank while it was being sent")
                md5.update(buf[:n])
                if whole is not None:
                    whole.update(buf[:n])
                pos += n
            digest = md5.digest()
            self.writer.write_file_part(job, index, fd, offset, length, digest)
        finally:
            os.close(fd)
        if whole is not None:
            job.inline = whole.hexdigest()
        return digest

    def finish(self, job: _Job) -> list[Callable[[], Any]]:
        entry = job.entry
        whole = job.whole_hex()
        digests = [d for d in job.digests if d] if job.part_md5 else []
        sent = whole if job.whole_name == "md5" else etag_of(digests) if digests else None
        if job.whole_name == "xxh3" and entry.xxh3 and whole != entry.xxh3:
            return self._mismatch(job, f"{entry.rel}: XXH3-128 {whole}, the source's manifest says {entry.xxh3}")
        got: str | None = None
        if entry.etag and "-" in entry.etag:  # (a one-part multipart upload's ETag is "...-1" too)
            got = (f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"
                   if digests and entry.part_size == job.part_size else None)
        elif entry.etag:
            got = sent if sent and "-" not in sent else None
        if got is not None and got != entry.etag:
            return self._mismatch(job, f"{entry.rel}: MD5 {got}, source says {entry.etag}")
        if self.dest.is_local:
            self.writer.commit(job)
        else:
            final = self.writer.commit(job)
            if final and "-" in final and final != sent:
                raise StorageError(f"s3://{entry.dest}: server ETag {final}, expected {sent}")
        entry.result_etag = sent or entry.etag
        entry.result_part_size = (job.part_size if sent and "-" in sent
                                  else entry.part_size if entry.result_etag and "-" in entry.result_etag else None)
        # XXH3 computed here, or the source's when an MD5 check proved the bytes are the source's
        entry.result_xxh3 = whole if job.whole_name == "xxh3" else entry.xxh3 if got is not None else None
        self.jobs.discard(job)
        self.finished.append(entry)
        self.emit(Event("file", entry.rel, entry.size, 1, "replaced" if entry.replaces else ""))
        return []

    def _mismatch(self, job: _Job, message: str) -> list[Callable[[], Any]]:
        self.writer.abort(job)
        self.jobs.discard(job)
        job.entry.attempts += 1
        if job.entry.attempts >= 3:
            raise StorageError(f"{message}; gave up after 3 attempts")
        self.emit(Event("retry", job.entry.rel, 0, 0, message))
        self.emit(Event("bytes", job.entry.rel, -job.entry.size))
        return self.start(job.entry)

    def sequential(self, entry: Entry) -> list[Callable[[], Any]]:
        """Copy one file through a non-parallel destination: temp name, stream, check, rename."""
        fs = self.dest.fs
        tmp = self.writer.tmp_name(entry.dest)
        job = _Job(entry, self.part_size)

        def attempt() -> tuple[str, str]:
            job.handle = tmp
            md5, whole = hashlib.md5(), hasher("xxh3")
            digests = []
            parent = posixpath.dirname(entry.dest)
            if parent:
                with contextlib.suppress(Exception):
                    fs.makedirs(parent, exist_ok=True)
            with fs.open(tmp, "wb") as out:
                for index in range(job.parts):
                    offset, length = job.part_range(index)
                    part = hashlib.md5()
                    for block in self.reader.read(entry.src, offset, length):
                        out.write(block)
                        md5.update(block)
                        part.update(block)
                        whole.update(block)
                    digests.append(part.digest())
            size = fs.info(tmp).get("size")
            if size != entry.size:
                raise ChecksumMismatch(f"{entry.rel}: wrote {size} bytes, expected {entry.size}")
            plain, multi = md5.hexdigest(), etag_of(digests)
            if entry.xxh3 and whole.hexdigest() != entry.xxh3:
                raise ChecksumMismatch(f"{entry.rel}: XXH3-128 {whole.hexdigest()}, the source's manifest says "
                                       f"{entry.xxh3}")
            if entry.etag and entry.etag not in (plain, multi) and not (
                    "-" in entry.etag and entry.part_size != job.part_size):
                raise ChecksumMismatch(f"{entry.rel}: MD5 {plain}, source says {entry.etag}")
            fs.mv(tmp, entry.dest)
            job.handle = None
            return multi, whole.hexdigest()

        try:
            entry.result_etag, entry.result_xxh3 = self._call(attempt, entry.rel)
        except BaseException:
            self.writer.abort(job)
            raise
        entry.result_part_size = job.part_size if job.parts > 1 else None
        self.emit(Event("bytes", entry.rel, entry.size))
        self.finished.append(entry)
        self.emit(Event("file", entry.rel, entry.size, 1, "replaced" if entry.replaces else ""))
        return []

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        from nbplugins.storage.s3 import storage_error

        try:
            return self.retry.call(fn, what=what)
        except NbpluginsError:
            raise
        except OSError as exc:
            raise _disk_error(what, exc) from None
        except Exception as exc:
            raise storage_error(exc, what) from None

    def emit(self, event: Event) -> None:
        self.events.put(("event", event))

    # -- driver

    def run(self) -> Iterator[Event]:
        started = time.monotonic()
        entries, is_dir = self.plan()
        if self.delete and not is_dir:
            raise StorageError(f"{self.src.url}: --delete mirrors a directory; the source is a single file")
        have = self.existing(entries)
        dest_manifest = _read_manifest(self.dest, self.retry) if is_dir and have else {}
        todo, skipped, kept = [], [], []
        for entry in entries:
            there = have.get(entry.dest)
            if self.unchanged(entry, there, dest_manifest):
                skipped.append(entry)
            elif there is not None and not self.clobber:
                kept.append(entry)  # not the source's bytes: left out of the manifest too
            else:
                entry.replaces = there is not None
                todo.append(entry)
        total = sum(e.size for e in todo)
        yield Event("plan", "", total, len(todo), f"{len(skipped)} already at the destination"
                    + (f", {len(kept)} different ones kept" if kept else ""))
        for entry in skipped:
            yield Event("skip", entry.rel, entry.size, 1)
        for entry in kept:
            yield Event("keep", entry.rel, entry.size, 1, "differs from the source; kept (no clobber)")
        self.jobs: set[_Job] = set()
        self.finished: list[Entry] = list(skipped)
        ready: dict[str, deque[Callable[[], Any]]] = {}  # parts waiting, by file
        files = deque(todo)
        inflight: Counter[str] = Counter()  # tasks running, by file (files with none are dropped)
        error: BaseException | None = None
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="nbp-staging")
        # an upload's parts take at most a quarter of the slots while other files wait: a server
        # that ingests a multipart upload as one ordered stream (rclone) keeps the rest busy
        per_file = self.concurrency if self.dest.is_local else max(2, self.concurrency // 4)

        def wrap(tag: str, task: Callable[[], Any]) -> None:
            try:
                self.events.put(("ok", (tag, task() or [])))
            except BaseException as exc:  # noqa: BLE001 - handed to the driver
                self.events.put(("error", (tag, exc)))

        def pick() -> tuple[str, Callable[[], Any]] | None:
            for tag, waiting in ready.items():
                if inflight[tag] < per_file or not files:
                    task = waiting.popleft()
                    if not waiting:
                        del ready[tag]
                    return tag, task
            if files:
                entry = files.popleft()
                return entry.rel, lambda: self.start(entry)
            return None

        try:
            while True:
                while error is None and sum(inflight.values()) < self.concurrency:
                    chosen = pick()
                    if chosen is None:
                        break
                    pool.submit(wrap, *chosen)
                    inflight[chosen[0]] += 1
                if not inflight:
                    break
                kind, payload = self.events.get()
                if kind == "event":
                    if payload.kind == "bytes" and payload.size < 0:
                        total += -payload.size
                    yield payload
                    continue
                tag, result = payload
                inflight[tag] -= 1
                if not inflight[tag]:
                    del inflight[tag]
                if kind == "ok":
                    if result:
                        ready.setdefault(tag, deque()).extend(result)
                elif error is None:
                    error = result
                    self.cancel.set()
            while not self.events.empty():
                kind, payload = self.events.get_nowait()
                if kind == "event":
                    yield payload
            if error is not None:
                raise error
            if self.delete:
                for path in self.extras(entries, have):
                    self._call(lambda p=path: self.remove(p), f"delete {self.dest.url_of(path)}")
                    yield Event("delete", path)
            manifest_path = None
            if is_dir and self.write_manifest_file:
                manifest_path = self._write_manifest(self.finished)
                yield Event("manifest", MANIFEST, 0, 0, self.dest.url_of(manifest_path))
            yield Event("done", "", total, len(todo), f"{len(skipped)} skipped in {time.monotonic() - started:.1f} s")
        except GeneratorExit:
            self.cancel.set()
            raise
        except Cancelled:
            raise
        except KeyboardInterrupt:
            self.cancel.set()
            raise
        finally:
            self.cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for job in list(self.jobs):
                getattr(self.writer, "release", self.writer.abort)(job)
            self.jobs.clear()
            for loc in (self.src, self.dest):
                wire = loc.__dict__.get("_wire")
                if wire is not None:
                    wire.close()

    def _write_manifest(self, entries: list[Entry]) -> str:
        files = {e.rel: {"size": e.size, "etag": e.result_etag, "part_size": e.result_part_size,
                         **({"xxh3_128": e.result_xxh3} if e.result_xxh3 else {})}
                 for e in sorted(entries, key=lambda e: e.rel)}
        body = json.dumps({"format": MANIFEST_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "checksum": "etag: S3 ETag (MD5 of the file, or MD5 of part MD5s + '-N' for part_size "
                                       "parts); xxh3_128: XXH3-128 of the whole file",
                           "files": files}, indent=1, sort_keys=True).encode()
        path = self.dest.join(MANIFEST)
        if self.dest.is_local:
            tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex[:8]}"
            try:
                with open(tmp, "wb") as handle:
                    handle.write(body)
                os.replace(tmp, path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise _disk_error(path, exc) from None
        else:
            self.writer.write_manifest(path, body)
        return path


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, StorageError):
        return False
    code = getattr(exc, "response", {}) or {}
    if isinstance(code, dict) and code.get("Error", {}).get("Code") in ("BadDigest", "RequestTimeout", "SlowDown",
                                                                         "InternalError", "ServiceUnavailable"):
        return True
    return is_transient(exc)


# ----------------------------------------------------------------------------- public API


def transfer(src: str, dest: str, *, profile: str | None = None, src_profile: str | None = None,
             dest_profile: str | None = None, concurrency: int | None = None, part_size: int | None = None,
             retry: Retry | None = None, cancel: threading.Event | None = None,
             manifest: bool = True, delete: bool = False, clobber: bool = True) -> Iterator[Event]:
    """Copy a file or a directory tree from ``src`` to ``dest`` (any two storage URLs).

    ``delete``: afterwards, remove the files under ``dest`` that ``src`` does not have, so
    ``dest`` mirrors ``src`` (only once every file arrived; a failed transfer deletes nothing).
    A file at ``dest`` that differs is replaced (``Summary.replaced`` counts them); with
    ``clobber=False`` it is left alone (``Summary.kept``).
    """
    src_loc = storage.locate(src, src_profile or profile)
    dest_loc = storage.locate(dest, dest_profile or profile)
    job = _Transfer(src_loc, dest_loc, concurrency=concurrency, part_size=part_size, retry=retry,
                    cancel=cancel, write_manifest=manifest, delete=delete, clobber=clobber)
    return job.run()


def get(src: str, dest: str, **options: Any) -> Iterator[Event]:
    """Download ``src`` (s3://, onedata://) to the local path ``dest``, skipping what is there.

    Local files that differ are replaced and counted; ``clobber=False`` keeps them instead.
    """
    if storage.split_url(dest)[0] != "file":
        raise StorageError(f"{dest}: get downloads to a local path; use sync between two remote URLs")
    return transfer(src, dest, **options)


def put(src: str, dest: str, **options: Any) -> Iterator[Event]:
    """Upload the local file or directory ``src`` to ``dest`` (s3://, onedata://)."""
    if storage.split_url(src)[0] != "file":
        raise StorageError(f"{src}: put uploads a local path; use sync between two remote URLs")
    return transfer(src, dest, **options)


def sync(src: str, dest: str, **options: Any) -> Iterator[Event]:
    """Make ``dest`` hold every file of ``src`` (any two URLs), sending only what differs."""
    return transfer(src, dest, **options)


def run(events: Iterator[Event], *, progress: bool = True, out: Any = None) -> Summary:
    """Consume a transfer's events with tqdm bars (bytes and files); return the summary."""
    from tqdm import tqdm

    summary = Summary()
    started = time.monotonic()
    bar: Any = None
    files_bar: Any = None
    try:
        for event in events:
            if event.kind == "plan":
                if progress:
                    bar = tqdm(total=event.size, unit="B", unit_scale=True, unit_divisor=1024, desc="bytes",
                               file=out, dynamic_ncols=True, leave=True)
                    files_bar = tqdm(total=event.files, unit="file", desc="files", file=out, leave=True)
            elif event.kind == "bytes":
                summary.bytes += event.size
                if bar is not None:
                    if event.size < 0:
                        bar.total += -event.size
                    bar.update(event.size)
            elif event.kind == "file":
                summary.files += 1
                summary.replaced += event.message == "replaced"
                if files_bar is not None:
                    files_bar.update(1)
            elif event.kind == "skip":
                summary.skipped += 1
                summary.skipped_bytes += event.size
            elif event.kind == "retry":
                log.warning("%s", event.message)
            elif event.kind == "keep":
                summary.kept += 1
            elif event.kind == "delete":
                summary.deleted += 1
            elif event.kind == "manifest":
                summary.manifest = event.message
    finally:
        for b in (bar, files_bar):
            if b is not None:
                b.close()
    summary.seconds = time.monotonic() - started
    return summary
