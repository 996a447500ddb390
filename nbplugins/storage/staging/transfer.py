"""One transfer from a source endpoint to a destination endpoint, as a generator of events:
plan, skip what is already there, move the rest part by part, verify, publish, mirror, manifest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import partial
from typing import TypeVar

from nbplugins.errors import StorageError
from nbplugins.events import REPLACED, Event, Kind
from nbplugins.retry import Retry
from nbplugins.storage import Location
from nbplugins.storage.staging import plan as planning
from nbplugins.storage.staging.checksums import CHUNK, PartHash
from nbplugins.storage.staging.endpoint import Endpoint, guarded, retryable
from nbplugins.storage.staging.fsspec_fs import FsspecEndpoint
from nbplugins.storage.staging.job import Job, job_for
from nbplugins.storage.staging.local import LocalEndpoint
from nbplugins.storage.staging.manifest import MANIFEST, render
from nbplugins.storage.staging.plan import Entry, Have
from nbplugins.storage.staging.s3 import S3Endpoint
from nbplugins.storage.staging.scheduler import Scheduler, Task

T = TypeVar("T")
#: The endpoint class of each storage scheme; any other scheme is an fsspec filesystem.
ENDPOINTS: dict[str, type[Endpoint]] = {"file": LocalEndpoint, "s3": S3Endpoint}


def endpoint_class(loc: Location) -> type[Endpoint]:
    """The endpoint class for a located URL."""
    return ENDPOINTS.get(loc.scheme, FsspecEndpoint)


class Transfer:
    """Plans and runs one transfer as a generator of events."""

    def __init__(self, src: Location, dest: Location, *, concurrency: int | None, part_size: int | None,
                 retry: Retry | None, cancel: threading.Event | None, write_manifest: bool,
                 delete: bool = False, clobber: bool = True) -> None:
        for what, value in (("part size", part_size), ("concurrency", concurrency)):
            if value is not None and value < 0:  # refused here, not retried part after part
                raise StorageError(f"{what} {value}: must be a positive number; nothing was transferred")
        s3 = dest.s3 or src.s3
        self.concurrency = concurrency or (s3.concurrency if s3 else 8)
        self.part_size = part_size or (s3.part_size if s3 else 16 * CHUNK)
        src_class, dest_class = endpoint_class(src), endpoint_class(dest)
        if self.part_size < dest_class.min_part_size:
            raise StorageError(f"part size must be at least {dest_class.min_part_size // CHUNK} MiB for "
                               f"{dest_class.kind} multipart uploads")
        self.delete = delete
        self.clobber = clobber
        self.write_manifest = write_manifest
        self.cancel = cancel or threading.Event()
        self.retry = (retry or Retry.from_config()).with_(cancel=self.cancel, retryable=retryable)
        self.src = src_class(src, self.retry)  # each owns its clients until the transfer ends
        self.dest = dest_class(dest, self.retry)
        self.scheduler = Scheduler(self.concurrency, self.dest.part_share(self.concurrency), self.cancel)
        self.jobs: set[Job] = set()
        self.finished: list[Entry] = []

    # -- planning

    def plan(self) -> tuple[list[Entry], bool]:
        """The files to move (every destination checked) and whether the source is a directory."""
        listing = self.src.list()
        if listing.is_dir:
            self.dest.check_dir(self.src.url)
        entries = planning.entries(listing, self.src.url, self.dest, listing.is_dir or self.dest.is_dir_target())
        return entries, listing.is_dir

    def sort(self, entries: list[Entry], is_dir: bool) -> tuple[list[Entry], list[Entry], list[Entry], dict[str, Have]]:
        """(to move, already there, different and kept) and what the destination holds."""
        have = self.dest.existing(entries)
        dest_manifest = self.dest.read_manifest() if is_dir and have else {}
        todo, skipped, kept = [], [], []
        for entry in entries:
            there = have.get(entry.dest)
            if planning.unchanged(entry, there, dest_manifest, src_file=self.src.local_file(entry.src),
                              dest_file=self.dest.local_file(entry.dest), part_size=self.part_size):
                skipped.append(entry)
            elif there is not None and not self.clobber:
                kept.append(entry)  # not the source's bytes: left out of the manifest too
            else:
                entry.replaces = there is not None
                todo.append(entry)
        return todo, skipped, kept, have

    # -- tasks (run on the scheduler's threads)

    def start(self, entry: Entry) -> list[Task]:
        """Open the destination of one file; its parts as tasks (a one-part file moves here at once)."""
        if not self.dest.parallel:
            return [partial(self.sequential, entry)]
        job = job_for(entry, self.part_size, src_local=self.src.local, dest_local=self.dest.local)
        self.dest.open(job)
        self.jobs.add(job)
        if job.ordered:
            job.reread = self.dest.reread_written(job) or self.src.reread_source(entry.src)
        if job.parts == 1:  # small file: open, move, verify, publish in one task (no hop via the driver)
            return self.part(job, 0)
        return [partial(self.part, job, i) for i in range(job.parts)]

    def part(self, job: Job, index: int) -> list[Task]:
        """Move one part (retried), then extend the ordered hash; the last part finishes the file."""
        inline = job.whole_name if job.parts == 1 else None

        def attempt() -> bytes:
            hashes = PartHash(job.part_md5, inline)
            self.dest.write_part(job, index, self.src, hashes)
            if inline:
                job.inline = hashes.whole_hex()
            return hashes.digest()

        digest = self._call(attempt, job.what(index))
        self.emit(Event(Kind.BYTES, job.entry.rel, size=job.part_range(index)[1]))
        last = job.mark(index, digest)
        if job.ordered:
            job.advance()
        return self.finish(job) if last else []

    def finish(self, job: Job) -> list[Task]:
        """Verify a file whose parts are all in, publish it, and record what the manifest says of it."""
        verdict = job.verdict()
        if verdict.problem:
            return self._mismatch(job, verdict.problem)
        final = self.dest.commit(job)
        if final and "-" in final and final != verdict.sent:
            raise StorageError(f"{self.dest.url_of(job.entry.dest)}: server ETag {final}, expected {verdict.sent}")
        job.settle(verdict)
        self.jobs.discard(job)
        self._done(job.entry)
        return []

    def _mismatch(self, job: Job, message: str) -> list[Task]:
        self.dest.abort(job)
        self.jobs.discard(job)
        job.entry.attempts += 1
        if job.entry.attempts >= 3:
            raise StorageError(f"{message}; gave up after 3 attempts")
        self.emit(Event(Kind.RETRY, job.entry.rel, message=message))
        self.emit(Event(Kind.BYTES, job.entry.rel, size=-job.entry.size))
        return self.start(job.entry)

    def sequential(self, entry: Entry) -> list[Task]:
        """Copy one file through a non-parallel destination: temp name, stream, check, rename."""
        job = Job(entry, self.part_size)
        try:
            entry.result_etag, entry.result_xxh3 = self._call(lambda: self.dest.copy(job, self.src), entry.rel)
        except BaseException:
            self.dest.abort(job)
            raise
        entry.result_part_size = job.part_size if job.parts > 1 else None
        self.emit(Event(Kind.BYTES, entry.rel, size=entry.size))
        self._done(entry)
        return []

    def _done(self, entry: Entry) -> None:
        self.finished.append(entry)
        self.emit(Event(Kind.FILE, entry.rel, size=entry.size, message=REPLACED if entry.replaces else ""))

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return guarded(self.retry, fn, what, disk=True)

    def emit(self, event: Event[int]) -> None:
        """Hand an event to the consumer of :meth:`events` (from any thread)."""
        self.scheduler.emit(event)

    # -- driver

    def events(self) -> Iterator[Event[int]]:
        """Plan, skip, move, delete (mirroring), write the manifest: every step as events (run as they are read)."""
        started = time.monotonic()
        try:
            entries, is_dir = self.plan()
            if self.delete and not is_dir:
                raise StorageError(f"{self.src.url}: --delete mirrors a directory; the source is a single file")
            todo, skipped, kept, have = self.sort(entries, is_dir)
            total = sum(e.size for e in todo)
            yield Event(Kind.PLAN, size=total, payload=len(todo), message=f"{len(skipped)} already at the destination"
                        + (f", {len(kept)} different ones kept" if kept else ""))
            for entry in skipped:
                yield Event(Kind.REUSED, entry.rel, size=entry.size, message="already at the destination")
            for entry in kept:
                yield Event(Kind.KEEP, entry.rel, size=entry.size, message="differs from the source; no clobber")
            self.finished = list(skipped)
            with closing(self.scheduler.run((e.rel, partial(self.start, e)) for e in todo)) as moving:
                for event in moving:
                    if event.kind == Kind.BYTES and event.size < 0:
                        total += -event.size
                    yield event
            if self.delete:
                for path in self.dest.extras(entries, have):
                    self._call(partial(self.dest.remove, path), f"delete {self.dest.url_of(path)}")
                    yield Event(Kind.DELETE, path)
            if is_dir and self.write_manifest:
                path = self.dest.join(MANIFEST)
                self.dest.write_manifest(path, render(self.finished))
                yield Event(Kind.MANIFEST, MANIFEST, message=self.dest.url_of(path))
            yield Event(Kind.DONE, size=total, payload=len(todo),
                        message=f"{len(skipped)} already there, in {time.monotonic() - started:.1f} s")
        finally:
            self.cancel.set()
            for job in list(self.jobs):
                self.dest.release(job)
            self.jobs.clear()
            self.src.close()
            self.dest.close()


