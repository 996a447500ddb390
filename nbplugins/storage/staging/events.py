"""What a transfer says as it goes (:class:`Event`), what it did (:class:`Summary`), and :func:`run`,
which consumes the events with tqdm bars; templates, reports and services can consume the same iterator."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("nbplugins.storage.staging")


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
        """Bytes per second moved."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def add(self, event: Event) -> None:
        """Count one event."""
        if event.kind == "bytes":
            self.bytes += event.size
        elif event.kind == "file":
            self.files += 1
            self.replaced += event.message == "replaced"
        elif event.kind == "skip":
            self.skipped += 1
            self.skipped_bytes += event.size
        elif event.kind == "keep":
            self.kept += 1
        elif event.kind == "delete":
            self.deleted += 1
        elif event.kind == "manifest":
            self.manifest = event.message


def run(events: Iterator[Event], *, progress: bool = True, out: Any = None) -> Summary:
    """Consume a transfer's events with tqdm bars (bytes and files); return the summary."""
    from tqdm import tqdm

    summary = Summary()
    started = time.monotonic()
    bar: Any = None
    files_bar: Any = None
    try:
        for event in events:
            summary.add(event)
            if event.kind == "plan" and progress:
                bar = tqdm(total=event.size, unit="B", unit_scale=True, unit_divisor=1024, desc="bytes",
                           file=out, dynamic_ncols=True, leave=True)
                files_bar = tqdm(total=event.files, unit="file", desc="files", file=out, leave=True)
            elif event.kind == "bytes" and bar is not None:
                if event.size < 0:
                    bar.total += -event.size
                bar.update(event.size)
            elif event.kind == "file" and files_bar is not None:
                files_bar.update(1)
            elif event.kind == "retry":
                log.warning("%s", event.message)
    finally:
        for b in (bar, files_bar):
            if b is not None:
                b.close()
    summary.seconds = time.monotonic() - started
    return summary
