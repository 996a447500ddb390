"""What a transfer did (:class:`Summary`), and :func:`consume`, which drives a transfer's
:class:`~nbplugins.events.Event` iterator to its end with tqdm bars; templates, reports and
services can consume the same iterator their own way."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nbplugins.events import REPLACED, Event, Kind

log = logging.getLogger("nbplugins.storage.staging")


@dataclass
class Summary:
    """What a transfer did."""

    files: int = 0
    bytes: int = 0
    skipped: int = 0  # files already at the destination (``reused`` events)
    skipped_bytes: int = 0
    replaced: int = 0  # files that were at the destination, differed, and were overwritten
    kept: int = 0  # files that were at the destination, differed, and were left alone (no clobber)
    deleted: int = 0
    seconds: float = 0.0
    manifest: str | None = None

    @property
    def rate(self) -> float:
        """Bytes per second moved."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def add(self, event: Event[Any]) -> None:
        """Count one event."""
        if event.kind == Kind.BYTES:
            self.bytes += event.size
        elif event.kind == Kind.FILE:
            self.files += 1
            self.replaced += event.message == REPLACED
        elif event.kind == Kind.REUSED:
            self.skipped += 1
            self.skipped_bytes += event.size
        elif event.kind == Kind.KEEP:
            self.kept += 1
        elif event.kind == Kind.DELETE:
            self.deleted += 1
        elif event.kind == Kind.MANIFEST:
            self.manifest = event.message


def consume(events: Iterator[Event[int]], *, progress: bool = True, out: Any = None) -> Summary:
    """Run a transfer to its end, showing tqdm bars (bytes and files) unless ``progress`` is off; what it did."""
    if progress:  # tqdm costs 30 ms to import: not for quiet transfers
        from tqdm import tqdm

    summary = Summary()
    started = time.monotonic()
    bar: Any = None
    files_bar: Any = None
    try:
        for event in events:
            summary.add(event)
            if event.kind == Kind.PLAN and progress:
                bar = tqdm(total=event.size, unit="B", unit_scale=True, unit_divisor=1024, desc="bytes",
                           file=out, dynamic_ncols=True, leave=True)
                files_bar = tqdm(total=event.payload, unit="file", desc="files", file=out, leave=True)
            elif event.kind == Kind.BYTES and bar is not None:
                if event.size < 0:
                    bar.total += -event.size
                bar.update(event.size)
            elif event.kind == Kind.FILE and files_bar is not None:
                files_bar.update(1)
            elif event.kind == Kind.RETRY:
                log.warning("%s", event.message)
    finally:
        for b in (bar, files_bar):
            if b is not None:
                b.close()
    summary.seconds = time.monotonic() - started
    return summary
