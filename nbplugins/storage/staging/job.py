"""One file in flight: its parts, their digests, the destination's handle, and the check once all parts are in."""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nbplugins.storage.staging.checksums import CHUNK, etag_of, hasher, part_count
from nbplugins.storage.staging.plan import Entry

#: Reads ``(offset, length)`` of a file already written (or being sent) as buffers, for the ordered whole-file hash.
Reread = Callable[[int, int], Iterable[bytes | memoryview]]


@dataclass
class Verdict:
    """What the checksums of a finished file say: what it is (``sent``, ``whole``) and what is wrong, if anything."""

    sent: str | None  # the S3-style ETag of the bytes moved (or their plain MD5)
    whole: str | None  # the whole-file hash computed on the way (``Job.whole_name``)
    proved: bool  # an MD5 check against the source's ETag passed
    problem: str = ""


class Job:
    """State of one file in flight: parts done, digests, destination handle, whole-file hash."""

    def __init__(self, entry: Entry, part_size: int, *, part_md5: bool = True, whole: str | None = None) -> None:
        self.entry = entry
        self.part_size = part_size
        self.parts = part_count(entry.size, part_size)
        self.digests: list[bytes | None] = [None] * self.parts
        self.etags: list[str | None] = [None] * self.parts
        self.done = 0
        self.lock = threading.Condition()
        self.handle: Any = None
        self.part_md5 = part_md5  # MD5 of each part (Content-MD5, multipart ETags)
        # whole: a whole-file hash ("md5" or "xxh3") is wanted. A one-part file is hashed as it
        # moves (``inline``); a larger one is hashed in order (ordered), each part as soon as it
        # and all before it are done, read back from the page cache (``reread``), overlapping
        # the transfer instead of following it.
        self.whole_name = whole
        self.ordered = whole is not None and self.parts > 1
        self.whole = hasher(whole) if self.ordered and whole else None
        self.reread: Reread | None = None
        self.inline: str | None = None
        self.resumed: dict[int, str] = {}  # part number -> ETag already on the server (a resumed upload)
        self.hashed = 0  # parts fed to ``whole``
        self.hashing = False
        self.hash_error: BaseException | None = None

    def part_range(self, index: int) -> tuple[int, int]:
        """(offset, length) of part ``index``."""
        offset = index * self.part_size
        return offset, min(self.part_size, self.entry.size - offset)

    def what(self, index: int) -> str:
        """How messages name part ``index`` (the file alone when it has one part)."""
        return f"{self.entry.rel} part {index + 1}/{self.parts}" if self.parts > 1 else self.entry.rel

    def mark(self, index: int, digest: bytes) -> bool:
        """Record part ``index`` as moved; True when it was the last one."""
        with self.lock:
            self.digests[index] = digest
            self.done += 1
            return self.done == self.parts

    def advance(self) -> None:
        """Feed every moved part that extends the hashed prefix to the whole-file hash (one thread at a time)."""
        while True:
            with self.lock:
                if (self.hashing or self.hash_error or self.hashed >= self.parts
                        or self.digests[self.hashed] is None):
                    return
                self.hashing = True
                index = self.hashed
            try:
                assert self.reread is not None and self.whole is not None
                for block in self.reread(*self.part_range(index)):
                    self.whole.update(block)
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

    def verdict(self) -> Verdict:
        """Check the moved bytes against what the source says (manifest XXH3, ETag); say what they are."""
        entry = self.entry
        whole = self.whole_hex()
        digests = [d for d in self.digests if d] if self.part_md5 else []
        sent = whole if self.whole_name == "md5" else etag_of(digests) if digests else None
        if self.whole_name == "xxh3" and entry.xxh3 and whole != entry.xxh3:
            return Verdict(sent, whole, False, f"{entry.rel}: XXH3-128 {whole}, the source's manifest says {entry.xxh3}")
        got: str | None = None
        if entry.etag and "-" in entry.etag:  # (a one-part multipart upload's ETag is "...-1" too)
            got = (f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"
                   if digests and entry.part_size == self.part_size else None)
        elif entry.etag:
            got = sent if sent and "-" not in sent else None
        if got is not None and got != entry.etag:
            return Verdict(sent, whole, False, f"{entry.rel}: MD5 {got}, source says {entry.etag}")
        return Verdict(sent, whole, got is not None)

    def settle(self, verdict: Verdict) -> None:
        """Record on the entry what the manifest says of the published file."""
        entry = self.entry
        sent = verdict.sent
        entry.result_etag = sent or entry.etag
        entry.result_part_size = (self.part_size if sent and "-" in sent
                                  else entry.part_size if entry.result_etag and "-" in entry.result_etag else None)
        # XXH3 computed here, or the source's when an MD5 check proved the bytes are the source's
        entry.result_xxh3 = (verdict.whole if self.whole_name == "xxh3"
                             else entry.xxh3 if verdict.proved else None)


MAX_PARTS = 10_000  # S3's limit on the parts of one multipart upload


def part_size_for(entry: Entry, part_size: int, *, verify_parts: bool) -> int:
    """The part size to move ``entry`` with: the source's own (``verify_parts``: checked part by part), or within S3's limit."""
    if verify_parts and not entry.xxh3 and entry.etag and "-" in entry.etag and entry.part_size:
        return entry.part_size  # ranges aligned with the source's parts: verify per part
    if part_count(entry.size, part_size) > MAX_PARTS:
        part_size = math.ceil(entry.size / MAX_PARTS / CHUNK) * CHUNK
    return part_size


def job_for(entry: Entry, part_size: int, *, src_local: bool, dest_local: bool) -> Job:
    """What to hash while moving ``entry``: MD5 per part and/or one whole-file hash."""
    part_size = part_size_for(entry, part_size, verify_parts=dest_local)
    if not dest_local:  # uploads: Content-MD5 per part, and XXH3 of the whole for the manifest
        return Job(entry, part_size, whole="xxh3" if src_local else None)
    if entry.xxh3:
        return Job(entry, part_size, part_md5=False, whole="xxh3")
    if entry.etag and "-" not in entry.etag and entry.size > part_size:
        return Job(entry, part_size, part_md5=False, whole="md5")
    return Job(entry, part_size)
