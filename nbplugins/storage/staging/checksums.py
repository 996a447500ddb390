"""Checksums of staged files: S3 ETags (MD5 of the file, or of its parts' MD5s), XXH3-128 for manifests.

MD5 is what S3 answers with (ETags, ``Content-MD5``); XXH3-128 costs a twentieth of MD5's CPU
and is what a manifest records, so a reader of a published set checks it cheaply.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from nbplugins.errors import StorageError, TransientError

CHUNK = 1 << 20
HEX = frozenset("0123456789abcdef")


class ChecksumMismatch(TransientError):
    """Bytes arrived that do not match their checksum; retried, then reported."""


def etag_of(digests: list[bytes]) -> str:
    """The S3 ETag of data whose parts have these MD5 digests (plain MD5 for one part)."""
    if len(digests) == 1:
        return digests[0].hex()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def part_count(size: int, part_size: int) -> int:
    """How many parts of ``part_size`` bytes hold ``size`` bytes (at least one)."""
    return max(1, math.ceil(size / part_size))


def hasher(name: str) -> Any:
    """A streaming hash object: ``md5`` (S3 ETags) or ``xxh3`` (XXH3-128, manifests)."""
    if name == "xxh3":
        import xxhash

        return xxhash.xxh3_128()
    return hashlib.md5()


def file_xxh3(path: str) -> str:
    """The XXH3-128 of a local file (hex), read through this thread's scratch buffer."""
    whole = hasher("xxh3")
    _feed_file(path, whole.update)
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
    guess = math.ceil(size / parts / CHUNK) * CHUNK
    return guess if part_count(size, guess) == parts else None


def clean_etag(etag: Any) -> str | None:
    """An ETag as staging compares it (lower-case hex, ``-N`` kept), or None for anything else."""
    if not isinstance(etag, str) or not etag:
        return None
    etag = etag.strip().strip('"').lower()
    return etag if len(etag) >= 32 and all(c in HEX or c == "-" for c in etag) else None


def clean_xxh3(value: Any) -> str | None:
    """A manifest's XXH3-128 (32 hex digits), or None for anything else."""
    if isinstance(value, str) and len(value) == 32 and all(c in HEX for c in value):
        return value
    return None


class PartHash:
    """What one part's bytes feed as they pass: the part's MD5 and, for a one-part file, the whole-file hash."""

    __slots__ = ("md5", "whole")

    def __init__(self, md5: bool, whole: str | None) -> None:
        self.md5 = hashlib.md5() if md5 else None
        self.whole = hasher(whole) if whole else None

    def update(self, block: bytes | memoryview) -> None:
        """Feed one block (any buffer: hashes read it in place)."""
        if self.md5 is not None:
            self.md5.update(block)
        if self.whole is not None:
            self.whole.update(block)

    def digest(self) -> bytes:
        """The part's MD5 digest (``b""`` when none is kept)."""
        return self.md5.digest() if self.md5 is not None else b""

    def whole_hex(self) -> str | None:
        """The whole-file hash of a one-part file (hex), if one was asked for."""
        return self.whole.hexdigest() if self.whole is not None else None


_scratch = threading.local()


def scratch() -> memoryview:
    """This thread's 1 MiB buffer for reading local bytes to hash (no fresh allocation per block)."""
    buf = _scratch.__dict__.get("buf")
    if buf is None:
        buf = _scratch.buf = memoryview(bytearray(CHUNK))
    return buf


def pread_views(fd: int, offset: int, length: int, short: str) -> Iterator[memoryview]:
    """Bytes ``[offset, offset + length)`` of an open file as views of :func:`scratch`, each valid until the next.

    A file that ends before ``offset + length`` raises StorageError(``short``).
    """
    buf = scratch()
    pos, end = offset, offset + length
    while pos < end:
        n = os.preadv(fd, [buf[:min(len(buf), end - pos)]], pos)
        if not n:
            raise StorageError(short)
        yield buf[:n]
        pos += n


def _feed_file(path: str, update: Callable[[memoryview], Any]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        for view in pread_views(fd, 0, os.fstat(fd).st_size, f"{path}: shrank while it was being hashed"):
            update(view)
    finally:
        os.close(fd)
