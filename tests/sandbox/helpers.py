"""Helpers for the sandbox tests: a clean environment for the CLI and a way to wait for a sandbox."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbplugins.sandbox import harness


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a CLI run: no developer settings, HOME and XDG folders under ``home``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NBPLUGINS_", "OIDC_", "FEDCLOUD_", "AWS_", "ONEDATA_", "OSCAR_", "XDG_"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_STATE_HOME=str(home / ".state"),
               XDG_CACHE_HOME=str(home / ".cache"))
    return env


def nbp(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the nbplugins CLI as a user would."""
    return subprocess.run([sys.executable, "-m", "nbplugins", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def read_state(directory: Path) -> dict:
    try:
        return json.loads((directory / "sandbox.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Poll ``predicate`` until true; fail if ``proc`` exits first or nothing happens in ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process exited ({proc.returncode}) before it was ready")
        if time.monotonic() > deadline:
            pytest.fail("the sandbox did not get ready")
        time.sleep(0.1)


def recorded_pids(state: dict) -> list[tuple[int, int | None]]:
    """The services' PIDs and those of every process spawned on the way."""
    entries = [*state.get("services", {}).values(), *state.get("spawned", [])]
    return [(e["pid"], e.get("ticks")) for e in entries]


def processes_under(directory: Path) -> list[int]:
    """Processes whose command line names ``directory`` (the sandbox's rclone and Onedata servers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(directory) in cmdline and harness.alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def none_alive(pids: list[tuple[int, int | None]]) -> bool:
    """No recorded server runs, nor any process left in its group."""
    return not any(harness.alive(pid, ticks) or harness.group_members(pid) for pid, ticks in pids)


def force_down(directory: Path) -> None:
    """Last resort in a teardown: stop whatever the state file names or runs from the folder."""
    for pid, ticks in recorded_pids(read_state(directory)):
        harness.stop_pid(pid, ticks, timeout=2)
    for pid in processes_under(directory):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
