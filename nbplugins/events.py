"""One vocabulary for the progress of long work: staging transfers, sweeps and pipeline runs all
yield :class:`Event` objects of one :class:`Kind`, which tqdm bars, reports, journals and the
editor consume alike (a leaf module: it imports nothing of nbplugins).

The words mean the same wherever they appear:

* ``run-started`` / ``run-finished``: the whole run (a pipeline run) begins / ends;
* ``started``, ``finished``, ``failed``: one item (a sweep's run, a pipeline's node) begins,
  succeeds, fails (``message`` says why);
* ``reused``: an earlier result stands, nothing is done again (a file already at the
  destination, a sweep run finished by an earlier invocation, a node kept from the previous
  attempt);
* ``skipped``: not done because something it needs failed (``message`` says what);
* a transfer's own steps: ``plan`` (totals known), ``bytes`` (``size`` bytes moved, negative
  when a part is sent again), ``file`` (one file published and verified; ``message`` is
  ``replaced`` when it overwrote a different one), ``retry`` (a checksum mismatch re-sends a
  file), ``delete`` (removed by a mirroring sync), ``keep`` (a different file at the
  destination left alone: no clobber), ``manifest`` (written; ``message`` is its URL), ``done``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

P = TypeVar("P")

#: The ``message`` of a ``file`` event that overwrote a different file.
REPLACED = "replaced"


class Kind(StrEnum):
    """What happened; a string, so ``event.kind == "failed"`` reads as it should."""

    RUN_STARTED = "run-started"
    RUN_FINISHED = "run-finished"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    REUSED = "reused"
    SKIPPED = "skipped"
    PLAN = "plan"
    BYTES = "bytes"
    FILE = "file"
    RETRY = "retry"
    DELETE = "delete"
    KEEP = "keep"
    MANIFEST = "manifest"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Event(Generic[P]):
    """Something that happened to ``subject`` (a path, a node label, ``run 3``; empty for the whole run).

    ``payload`` carries what a consumer of one producer needs: a sweep's
    :class:`~nbplugins.sweep.plan.PlannedRun`, a pipeline node's outputs, a transfer's file count.
    """

    kind: Kind
    subject: str = ""
    time: float = field(default_factory=time.time)
    duration: float | None = None
    size: int = 0
    message: str = ""
    payload: P | None = None

    def line(self) -> str:
        """The one-line human text (what the CLI prints and the editor logs)."""
        took = f" in {self.duration:.1f} s" if self.duration is not None else ""
        why = f" ({self.message})" if self.message else ""
        match self.kind:
            case Kind.STARTED:
                return f"{self.subject}: started"
            case Kind.FINISHED:
                return f"{self.subject}: done{took}"
            case Kind.FAILED:
                return f"{self.subject}: FAILED: {self.message}"
            case Kind.REUSED:
                return f"{self.subject}: {self.message or 'kept from the previous attempt'}{took}"
            case Kind.SKIPPED:
                return f"{self.subject}: skipped{why}"
            case Kind.PLAN:
                return f"plan: {self.payload} files, {size_text(self.size)} to move{why}"
            case Kind.BYTES:
                return f"{self.subject}: {size_text(self.size)} moved"
            case Kind.FILE:
                return f"{self.subject}: {'replaced' if self.message == REPLACED else 'written'}, {size_text(self.size)}"
            case Kind.RETRY:
                return f"{self.subject}: sent again: {self.message}"
            case Kind.DELETE:
                return f"{self.subject}: deleted (not in the source)"
            case Kind.KEEP:
                return f"{self.subject}: kept{why}"
            case Kind.DONE:
                return f"done: {self.payload} files, {size_text(self.size)}{why}"
        return f"{self.kind}: {self.message}" if self.message else str(self.kind)


def size_text(size: int) -> str:
    """``size`` bytes for people: ``512 B``, ``1.5 KiB``, ``3.0 MiB``."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
