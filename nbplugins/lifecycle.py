"""How long runs end when the process is told to stop.

A hub culling a server, a scheduler cancelling a job and ``kill`` send SIGTERM; a terminal
sends SIGINT; a closed terminal SIGHUP. Within :func:`stoppable` each of them raises
:class:`Interrupted` in the main thread, so the run's ``finally`` blocks stop its kernels,
remove its temporary files and record it as interrupted. Further signals while it does so
are ignored: the clean-up takes seconds, and a second Ctrl-C must not cut it short.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The process received ``signum``; exit with ``128 + signum`` (130, 143, 129)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Turn the stop signals into :class:`Interrupted` for the duration of the block.

    Only the main thread can install handlers; elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
