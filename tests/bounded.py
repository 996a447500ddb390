"""Calls that must not block: run one in a thread and fail the test if it is still running."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def call_within(call: Callable[[], Any], seconds: float = 5.0) -> tuple[Any, float]:
    """Run ``call`` in a thread: the exception it raised (or its result) and how long it took."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return box["value"], time.monotonic() - started
