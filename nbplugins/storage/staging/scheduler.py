"""Runs a transfer's tasks on a thread pool and hands back its events, in one generator.

Knows nothing of files or backends: a task is a callable tagged with what it belongs to (a
file); it may return follow-up tasks (the parts of a file) and emit events from any thread.
At most ``concurrency`` tasks run at once and at most ``per_tag`` of one tag while new work
waits, so one large file does not hold every slot. The first failure stops new tasks,
lets the running ones end, and is raised once their events are out.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: A unit of work; returns follow-up tasks of the same tag (or nothing).
Task = Callable[[], "list[Task] | None"]


class Scheduler:
    """A bounded pool for tagged tasks and the one queue their events come through (one :meth:`run` each)."""

    def __init__(self, concurrency: int, per_tag: int, cancel: threading.Event) -> None:
        self.concurrency = concurrency
        self.per_tag = per_tag
        self.cancel = cancel
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._fresh: deque[tuple[str, Task]] = deque()  # first tasks not started yet
        self._ready: dict[str, deque[Task]] = {}  # follow-ups waiting, by tag
        self._inflight: Counter[str] = Counter()  # tasks running, by tag (tags with none are dropped)
        self._error: BaseException | None = None

    def emit(self, event: Any) -> None:
        """Hand an event to the consumer (from any thread)."""
        self._queue.put(("event", event))

    def run(self, work: Iterable[tuple[str, Task]]) -> Iterator[Any]:
        """Run ``work`` (tag, first task) and every follow-up; yield the events as they come."""
        self._fresh.extend(work)
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="nbp-staging")
        try:
            while self._fill(pool):
                kind, payload = self._queue.get()
                if kind == "event":
                    yield payload
                else:
                    self._settle(kind, *payload)
            while not self._queue.empty():  # events of the last tasks
                kind, payload = self._queue.get_nowait()
                if kind == "event":
                    yield payload
            if self._error is not None:
                raise self._error
        except BaseException:
            self.cancel.set()  # running tasks see it and stop at their next retry or part
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self, pool: ThreadPoolExecutor) -> bool:
        """Start tasks while slots are free (none after a failure); True while any task runs."""
        while self._error is None and sum(self._inflight.values()) < self.concurrency:
            chosen = self._pick()
            if chosen is None:
                break
            pool.submit(self._wrap, *chosen)
            self._inflight[chosen[0]] += 1
        return bool(self._inflight)

    def _pick(self) -> tuple[str, Task] | None:
        """A waiting follow-up whose tag is under its share (any, once no new work waits); else new work."""
        for tag, waiting in self._ready.items():
            if self._inflight[tag] < self.per_tag or not self._fresh:
                task = waiting.popleft()
                if not waiting:
                    del self._ready[tag]
                return tag, task
        return self._fresh.popleft() if self._fresh else None

    def _wrap(self, tag: str, task: Task) -> None:
        try:
            self._queue.put(("ok", (tag, task() or [])))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put(("error", (tag, exc)))

    def _settle(self, kind: str, tag: str, result: Any) -> None:
        """A task ended: queue its follow-ups, or keep the first failure and stop starting tasks."""
        self._inflight[tag] -= 1
        if not self._inflight[tag]:
            del self._inflight[tag]
        if kind == "ok":
            if result:
                self._ready.setdefault(tag, deque()).extend(result)
        elif self._error is None:
            self._error = result
            self.cancel.set()
