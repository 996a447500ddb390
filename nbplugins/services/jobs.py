"""One job model for remote processes (WPS, OGC API - Processes, OSCAR) and the one way to wait.

Each protocol maps its status vocabulary onto :class:`State` and gives :func:`wait` a function
that fetches a fresh :class:`Job`. Waiting goes through :func:`nbplugins.retry.poll` on the
schedule the services promise: completion is seen within 1 s or a tenth of the job's elapsed
time, whichever is larger, and no more than one request per second is sent on average, also
while the status URL fails (the retry backoff starts at that second).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from nbplugins.errors import Cancelled, ServiceError
from nbplugins.retry import Retry, poll


class State(StrEnum):
    """Where a job is, in one vocabulary for every protocol."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DISMISSED = "dismissed"

    @property
    def final(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED, State.DISMISSED)


#: Status words of each protocol, lower-cased, onto :class:`State`.
VOCABULARY: dict[str, State] = {
    # OGC WPS 1.0.0 (and PyWPS's exception report)
    "processaccepted": State.ACCEPTED, "processpaused": State.RUNNING, "processstarted": State.RUNNING,
    "processsucceeded": State.SUCCEEDED, "processfailed": State.FAILED, "exception": State.FAILED,
    # OGC API - Processes 1.x
    "accepted": State.ACCEPTED, "running": State.RUNNING, "successful": State.SUCCEEDED,
    "failed": State.FAILED, "dismissed": State.DISMISSED,
    # OSCAR (Kubernetes job phases)
    "pending": State.ACCEPTED, "succeeded": State.SUCCEEDED,
}


def state_of(word: str, *, service: str = "service") -> State:
    """The :class:`State` for a protocol's status word; an unknown word is a clear error."""
    state = VOCABULARY.get(str(word).strip().lower())
    if state is None:
        raise ServiceError(f"{service}: unknown job status {word!r}")
    return state


class JobFailed(ServiceError):
    """A remote job ended failed or dismissed; the message is the service's own."""

    def __init__(self, job: Job) -> None:
        why = job.message or "no message from the service"
        super().__init__(f"{job.service}: {job.process} job {job.id} {job.state.value}: {why}")
        self.job = job


@dataclass(frozen=True)
class Job:
    """A remote job as last seen: identity, state, progress and the service's message."""

    id: str
    service: str
    process: str
    state: State = State.ACCEPTED
    progress: int | None = None
    message: str = ""
    started: datetime | None = None
    finished: datetime | None = None
    #: Where its status is read (a WPS status document, an OGC job URL); no secrets in it.
    status_url: str | None = None
    #: The protocol's own last answer (parsed), for result extraction.
    raw: Any = field(default=None, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.state.final

    def with_(self, **changes: Any) -> Job:
        return replace(self, **changes)

    def check(self) -> Job:
        """This job if it succeeded; :class:`JobFailed` with the service's message otherwise."""
        if self.state in (State.FAILED, State.DISMISSED):
            raise JobFailed(self)
        return self


def schedule(elapsed: float) -> float:
    """Seconds to the next status request: 1 s, or a tenth of the time already waited."""
    return max(1.0, elapsed / 10.0)


#: Retry policy for one status request: the first retry after at least 1 s, so a failing
#: status URL is asked at most once a second.
STATUS_RETRY = Retry(initial=1.25, factor=1.5, cap=30.0, jitter=0.2, error_budget=12)


def wait(
    job: Job,
    refresh: Callable[[Job], Job],
    *,
    timeout: float = 3600.0,
    dismiss: Callable[[Job], Any] | None = None,
    progress: bool = True,
    retry: Retry | None = None,
) -> Job:
    """Poll ``refresh(job)`` until the job is final or ``timeout`` seconds have passed.

    Ctrl-C (or SIGTERM through :func:`nbplugins.lifecycle.stoppable`) dismisses the job where
    ``dismiss`` is given, then goes on up. Returns the final job; :meth:`Job.check` turns a
    failure into an error with the service's message.
    """
    from tqdm import tqdm

    last = [job]
    bar = tqdm(total=100, unit="%", desc=f"{job.process} {job.id}"[:40], file=sys.stderr,
               disable=not progress, leave=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")
    started = time.monotonic()

    def show(current: Job) -> None:
        last[0] = current
        if current.progress is not None:
            bar.n = max(0, min(100, int(current.progress)))
        bar.set_postfix_str(current.state.value, refresh=False)
        bar.refresh()

    try:
        final = poll(lambda: refresh(last[0]), lambda j: j.done, what=f"{job.service} job {job.id}",
                     interval=schedule, max_interval=60.0, deadline=timeout,
                     retry=retry or STATUS_RETRY, on_status=show)
        if final.state is State.SUCCEEDED:
            bar.n = 100
            bar.refresh()
        return final
    except (KeyboardInterrupt, Cancelled):
        if dismiss is not None:
            try:
                dismiss(last[0])
                bar.write(f"{job.service}: dismissed job {job.id} after {time.monotonic() - started:.0f} s",
                          file=sys.stderr)
            except Exception as exc:  # the interrupt matters more than a failed dismissal
                bar.write(f"{job.service}: could not dismiss job {job.id}: {exc}", file=sys.stderr)
        raise
    finally:
        bar.close()
