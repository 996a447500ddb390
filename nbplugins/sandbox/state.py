"""The sandbox's state file (``<dir>/sandbox.json``): what runs where, by PID, written atomically.

It outlives the ``up`` process on purpose: ``down`` reads it to stop every server after a crash,
``status`` to check each PID, and :func:`diagnose` to tell a user whose profile points at a
sandbox that is down how to start it. It holds no secret (those live in ``config.toml``).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

from nbplugins import files
from nbplugins.errors import NbpluginsError
from nbplugins.sandbox import harness

STATE = "sandbox.json"
CONFIG = "config.toml"
VERSION = 1
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SandboxError(NbpluginsError):
    """The sandbox cannot start, is already running, or a tool it needs is missing."""


def default_dir() -> Path:
    """``$XDG_STATE_HOME/nbplugins/sandbox``, else ``~/.local/state/nbplugins/sandbox``."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "nbplugins" / "sandbox"


def up_command(directory: str | os.PathLike[str]) -> str:
    """The command that starts the sandbox in ``directory`` (``--dir`` only when it is not the default)."""
    directory = Path(directory)
    return "nbplugins sandbox up" if directory == default_dir() else f"nbplugins sandbox up --dir {directory}"


def read(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The state of the sandbox in ``directory``, or None if none ever ran there."""
    path = Path(directory) / STATE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SandboxError(f"the sandbox state file {path} is unreadable ({exc}): stop any server "
                           f"it started by hand, then remove the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise SandboxError(f"the sandbox state file {path} is not one nbplugins wrote: remove it")
    return data


def write(directory: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Replace the state file atomically (0600: it names local paths and PIDs)."""
    files.write_atomic(Path(directory) / STATE, json.dumps(state, indent=2, sort_keys=True) + "\n")


def service_alive(entry: dict[str, Any]) -> bool:
    """Whether the server recorded in ``entry`` still runs (its PID, with its start time)."""
    pid = entry.get("pid")
    return isinstance(pid, int) and harness.alive(pid, entry.get("ticks"))


def alive_services(state: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The recorded services whose process still runs."""
    if not state:
        return {}
    return {name: entry for name, entry in state["services"].items() if service_alive(entry)}


def up_process_alive(state: dict[str, Any]) -> bool:
    """Whether the ``nbplugins sandbox up`` process that wrote ``state`` still runs."""
    pid = state.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and harness.alive(pid, state.get("ticks"))


def _candidates() -> list[Path]:
    from nbplugins import config

    found = []
    for directory in (config.config_path().parent, default_dir()):
        if (directory / STATE).is_file() and directory not in found:
            found.append(directory)
    return found


def diagnose(url: str) -> str | None:
    """One line for a failed connection to ``url`` when it is a sandbox endpoint that is down.

    The storage and token layers call it when they cannot connect: if ``url`` is on loopback
    and a sandbox (the one beside the active config file, or the default one) recorded a
    server on that port which no longer runs, the line names the profile and how to start it.
    Anything else gives None, and the caller keeps its own message.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host not in LOOPBACK or port is None:
        return None
    for directory in _candidates():
        try:
            state = read(directory)
        except SandboxError:
            continue
        for name, entry in (state or {}).get("services", {}).items():
            if entry.get("port") != port:
                continue
            if service_alive(entry):
                return None
            config_file = directory / CONFIG
            return (f"the 'sandbox' profile ({config_file}) points at the sandbox's {name} server at "
                    f"{entry.get('url')}, which is not running: start it with `{up_command(directory)}`")
    return None
