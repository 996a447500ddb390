"""Any other fsspec filesystem (Onedata, ...) as either side of a transfer: ranged reads, and a sequential
write to a temporary name that is checked, then moved over the target."""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from collections.abc import Iterator

from nbplugins.errors import StorageError, TransientError
from nbplugins.retry import describe
from nbplugins.storage.staging.checksums import CHUNK, ChecksumMismatch, clean_etag, etag_of, hasher
from nbplugins.storage.staging.endpoint import TMP_MARK, Endpoint
from nbplugins.storage.staging.job import Job
from nbplugins.storage.staging.plan import Entry, Have, Listed, Listing

READ_BLOCK = 8 * CHUNK  # one ranged read


def _etag(item: dict) -> str | None:
    return clean_etag(item.get("ETag") or item.get("etag"))


class FsspecEndpoint(Endpoint):
    """An fsspec filesystem: ``cat_file`` ranges in, one stream out per file (``parallel`` is False)."""

    parallel = False

    # -- as a source

    def list(self) -> Listing:
        fs = self.loc.fs
        try:
            info = fs.info(self.path)
        except FileNotFoundError:
            raise StorageError(f"{self.url}: no such file or directory") from None
        except Exception as exc:
            raise StorageError(f"{self.url}: {describe(exc)}") from None
        if info.get("type") != "directory":
            return Listing([Listed(posixpath.basename(self.path.rstrip("/")), info["name"], info.get("size") or 0,
                                   _etag(info))], False)
        base = info["name"].rstrip("/")
        found = []
        for path, item in sorted(fs.find(self.path, detail=True).items()):
            if item.get("type") == "directory" or TMP_MARK in path:
                continue
            rel = path[len(base):].lstrip("/") if path.startswith(base) else posixpath.basename(path)
            found.append(Listed(rel, path, item.get("size") or 0, _etag(item)))
        return Listing(found, True, self.read_manifest())

    def read(self, path: str, offset: int, length: int) -> Iterator[bytes]:
        pos, end = offset, offset + length
        while pos < end:
            block = self.loc.fs.cat_file(path, start=pos, end=min(end, pos + READ_BLOCK))
            if not block:
                raise TransientError(f"{self.loc.scheme}://{path}: short read at {pos}")
            yield block
            pos += len(block)

    def read_file(self, path: str) -> bytes:
        return self.loc.fs.cat_file(path)

    # -- as a destination

    def existing(self, entries: list[Entry]) -> dict[str, Have]:
        out: dict[str, Have] = {}
        for e in entries:
            with contextlib.suppress(Exception):
                info = self.loc.fs.info(e.dest)
                if info.get("type") != "directory":
                    out[e.dest] = (info.get("size"), _etag(info), None)
        return out

    def files_below(self, have: dict[str, Have]) -> list[str]:
        return [p for p, item in self.loc.fs.find(self.path, detail=True).items() if item.get("type") != "directory"]

    def remove(self, path: str) -> None:
        self.loc.fs.rm_file(path)

    def copy(self, job: Job, source: Endpoint) -> tuple[str, str]:
        """Stream the file to a temporary name, check size and checksums, then move it over the target."""
        fs, entry = self.loc.fs, job.entry
        tmp = job.handle = job.handle or self.tmp_name(entry.dest)  # a retry writes the same temporary file
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
                for block in source.read(entry.src, offset, length):
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

    def abort(self, job: Job) -> None:
        if job.handle:
            with contextlib.suppress(Exception):
                self.loc.fs.rm_file(job.handle)
            job.handle = None

    def write_manifest(self, path: str, body: bytes) -> None:
        tmp = self.tmp_name(path)
        self.loc.fs.pipe_file(tmp, body)
        self.loc.fs.mv(tmp, path)
