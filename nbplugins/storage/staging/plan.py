"""Planning a transfer: the source's listing -> one :class:`Entry` per file, every destination checked
before anything is written; and which files are already at the destination (same size and checksum)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from nbplugins import paths
from nbplugins.errors import StorageError, ValidationError
from nbplugins.storage.staging.checksums import (
    clean_etag,
    clean_xxh3,
    file_etags,
    file_xxh3,
    guess_part_size,
)
from nbplugins.storage.staging.manifest import MANIFEST

if TYPE_CHECKING:
    from nbplugins.storage.staging.endpoint import Endpoint

#: What a destination already holds at a path: (size, ETag, part size of a multipart ETag).
Have = tuple[int, str | None, int | None]


class Listed(NamedTuple):
    """One file of a source's listing."""

    rel: str  # path below the source ("" parts refused later)
    path: str  # the backend's own path of the file
    size: int
    etag: str | None = None
    part_size: int | None = None


@dataclass
class Listing:
    """A source's files, whether it is a directory (or prefix), and its manifest's entries."""

    files: list[Listed]
    is_dir: bool
    manifest: dict[str, Any] = field(default_factory=dict)


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


def safe_rel(rel: str, where: str) -> str:
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


def entries(listing: Listing, src_url: str, dest: Endpoint, dest_is_dir: bool) -> list[Entry]:
    """The files to consider, each with its destination path and the checksum the source vouches for."""
    found: list[Entry] = []
    seen: set[str] = set()
    for rel, path, size, etag, part in listing.files:
        if listing.is_dir and rel == MANIFEST:
            continue
        rel = safe_rel(rel, src_url) if dest_is_dir else rel
        known = listing.manifest.get(rel)
        xxh3 = None
        if isinstance(known, dict) and known.get("size") == size:
            # the publisher's manifest is the reference: bytes that differ from it are an error
            etag, part = clean_etag(known.get("etag")) or etag, known.get("part_size") or part
            xxh3 = clean_xxh3(known.get("xxh3_128"))
        if etag and "-" in etag and not part:
            part = guess_part_size(size, etag)
        if dest_is_dir:
            dest.check_inside(rel, src_url)
        found.append(Entry(rel, path, dest.join(rel) if dest_is_dir else dest.path, size, etag, part, xxh3))
        seen.add(rel)
    for entry in found:  # "a" as a file and "a/b" below it cannot both exist
        parent = posixpath.dirname(entry.rel)
        while parent:
            if parent in seen:
                raise StorageError(f"{src_url}: {parent!r} is both a file and a directory; nothing was transferred")
            parent = posixpath.dirname(parent)
    if listing.is_dir and not found:  # a wrong prefix, or a set whose files are gone
        only = any(f.rel == MANIFEST for f in listing.files)
        raise StorageError(f"{src_url}: holds {'only ' + MANIFEST + ' and ' if only else ''}no files to "
                           "transfer; check the path (nothing was transferred)")
    return found


def unchanged(entry: Entry, have: Have | None, dest_manifest: dict[str, Any], *, src_file: str | None,
              dest_file: str | None, part_size: int) -> bool:
    """True when the destination already holds this file (same size and checksum).

    ``dest_file`` / ``src_file``: the local file of either side, hashed here; two remote sides
    compare ETags.
    """
    if have is None or have[0] != entry.size:
        return False
    size, dest_etag, dest_part = have
    known = dest_manifest.get(entry.rel)
    if not dest_etag and isinstance(known, dict) and known.get("size") == size:
        dest_etag, dest_part = clean_etag(known.get("etag")), known.get("part_size")
    if dest_file is not None:
        if entry.xxh3:
            ok = file_xxh3(dest_file) == entry.xxh3
        elif entry.etag:
            plain, multi = file_etags(dest_file, entry.part_size or part_size)
            ok = entry.etag in (plain, multi)
        elif src_file is not None:  # local to local: no checksum recorded on either side, hash both
            ok = file_xxh3(dest_file) == file_xxh3(src_file)
        else:
            return False
    elif src_file is not None and dest_etag:
        part = dest_part or guess_part_size(entry.size, dest_etag) or part_size
        plain, multi = file_etags(src_file, part)
        ok = dest_etag in (plain, multi)
    else:
        ok = bool(entry.etag and dest_etag and entry.etag == dest_etag)
    if ok:
        entry.result_etag = dest_etag or entry.etag
        entry.result_part_size = dest_part if dest_etag and "-" in dest_etag else entry.part_size
        entry.result_xxh3 = entry.xxh3 or (clean_xxh3(known.get("xxh3_128")) if isinstance(known, dict) else None)
    return ok
