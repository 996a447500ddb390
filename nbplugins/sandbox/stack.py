"""Start, watch and stop the sandbox stack: every selected service on 127.0.0.1 in one folder.

``up`` starts the services in order on free ports (the ports of the previous run when they
are still free), loads the sample data, writes the ``sandbox`` profile into ``<dir>/config.toml``
(0600) and records every PID in ``<dir>/sandbox.json`` as it goes, so ``down`` can stop them
all even after the ``up`` process crashed. A lock file keeps a second ``up`` out while one runs.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import signal
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nbplugins import files, secrets
from nbplugins.errors import NbpluginsError
from nbplugins.sandbox import harness, registry, state
from nbplugins.sandbox.registry import Context, Started
from nbplugins.sandbox.state import SandboxError

Echo = Callable[[str], None]
PORT_ATTEMPTS = 3


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _quiet(_line: str) -> None:
    pass


@dataclass
class Sandbox:
    """A sandbox this process started: its folder, state, running services and config file."""

    dir: Path
    state: dict[str, Any]
    started: dict[str, Started] = field(default_factory=dict)
    lock: IO[str] | None = None

    @property
    def config_file(self) -> Path:
        return self.dir / state.CONFIG

    def save(self) -> None:
        state.write(self.dir, self.state)

    def stop(self, status: str = "stopped") -> None:
        """Stop every server this process started (last first) and record it."""
        for started in reversed(list(self.started.values())):
            started.server.stop()
        self.state.update(status=status, stopped=_now())
        self.save()
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def _running_message(directory: Path, current: dict[str, Any] | None) -> str:
    running = state.alive_services(current)
    where = ", ".join(f"{name} at {entry['url']}" for name, entry in running.items())
    what = f"is already running ({where})" if where else "is starting in another process"
    dir_option = "" if directory == state.default_dir() else f" --dir {directory}"
    return (f"the sandbox in {directory} {what}: use it with `export NBPLUGINS_CONFIG={directory / state.CONFIG}`, "
            f"see `nbplugins sandbox status{dir_option}`, or stop it with `nbplugins sandbox down{dir_option}`")


def _lock(directory: Path) -> IO[str]:
    handle = open(directory / ".lock", "a")  # noqa: SIM115 - held for the life of the sandbox
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SandboxError(_running_message(directory, state.read(directory))) from None
    return handle


def _ports(previous: int | None) -> list[int]:
    """Ports to try: the previous run's when it is free, then free ones."""
    ports = [previous] if previous and harness.port_free(previous) else []
    while len(ports) < PORT_ATTEMPTS:
        ports.append(harness.free_port())
    return ports


def _start(service: registry.Service, ctx: Context, previous: int | None, echo: Echo) -> Started:
    """Start one service, on another port when its port is taken meanwhile."""
    ports = _ports(previous)
    for attempt, port in enumerate(ports):
        echo(f"starting {service.name} on {harness.HOST}:{port}")
        try:
            return service.start(ctx, port)
        except RuntimeError as exc:  # the server exited or never answered (harness.start)
            if attempt + 1 < len(ports) and not harness.port_free(port):
                echo(f"port {port} was taken meanwhile; trying another")
                continue
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            why = lines[0] + (f" ... {lines[-1]}" if len(lines) > 1 else "")
            raise SandboxError(f"the sandbox's {service.name} server did not start: {why} "
                               f"(logs in {ctx.log_dir})") from None
        except NbpluginsError:
            raise
        except Exception as exc:
            raise SandboxError(f"the sandbox's {service.name} service failed to start: "
                               f"{type(exc).__name__}: {exc}") from None
    raise AssertionError("unreachable")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def config_text(started: dict[str, Started]) -> str:
    """The ``sandbox`` profile: every service's config tables, merged in starting order."""
    tables: dict[str, dict[str, Any]] = {}
    for one in started.values():
        for name, table in one.settings.items():
            tables.setdefault(name, {}).update(table)
    lines = [f"# written by `nbplugins sandbox up` at {_now()}, rewritten by every `up`.",
             "# Private (0600): it holds the sandbox's keys and tokens.", ""]
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def up(directory: str | os.PathLike[str], services: list[str] | None = None, *, detach: bool = False,
       echo: Echo = _quiet) -> Sandbox:
    """Start the selected services (all when None) in ``directory``; stop them all if one fails."""
    directory = Path(directory).expanduser().absolute()
    chosen = registry.select(services)
    registry.check_tools(chosen)
    for private in (directory, directory / "logs"):  # logs may hold what the servers saw
        private.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(private, 0o700)
    lock = _lock(directory)
    try:
        previous = state.read(directory)
    except BaseException:
        lock.close()
        raise
    if state.alive_services(previous):
        lock.close()
        raise SandboxError(_running_message(directory, previous))
    for entry in _recorded(previous):  # leftovers of a crashed run's servers
        harness.stop_pid(entry["pid"], entry.get("ticks"), timeout=2)
    me = os.getpid()
    sandbox = Sandbox(directory, {
        "version": state.VERSION, "dir": str(directory), "pid": me, "ticks": harness.start_ticks(me),
        "detached": detach, "started": _now(), "status": "starting", "config": str(directory / state.CONFIG),
        "services": {}, "spawned": [],
    }, lock=lock)
    ctx = Context(directory, detach, sandbox.started)
    old_ports = {name: entry.get("port") for name, entry in (previous or {}).get("services", {}).items()}
    def spawned(server: harness.ServerProcess) -> None:  # recorded before it answers: `down` finds it
        sandbox.state["spawned"].append({"name": server.name, "pid": server.pid, "ticks": server.ticks})
        sandbox.save()

    try:
        sandbox.save()
        for service in chosen:
            with harness.on_spawn(spawned):
                started = _start(service, ctx, old_ports.get(service.name), echo)
            for value in started.secrets:
                secrets.register(value, f"sandbox {service.name}")
            sandbox.started[service.name] = started
            server = started.server
            sandbox.state["services"][service.name] = {
                "pid": server.pid, "ticks": server.ticks, "port": server.port, "url": server.url,
                "log": str(server.log_path), "info": started.info, "data": started.data,
            }
            sandbox.save()
        for service in chosen:
            if service.seed:
                echo(f"loading the sample data into {service.name}")
                started = sandbox.started[service.name]
                started.data += service.seed(started, ctx)
                sandbox.state["services"][service.name]["data"] = started.data
        files.write_atomic(sandbox.config_file, config_text(sandbox.started))
        sandbox.state["status"] = "running"
        sandbox.save()
    except BaseException:
        sandbox.stop("failed")
        raise
    if detach:  # the servers outlive this process; the lock goes with it
        lock.close()
        sandbox.lock = None
    return sandbox


def wait(sandbox: Sandbox, echo: Echo = _quiet, poll: float = 1.0) -> None:
    """Keep a foreground sandbox up until interrupted (run inside ``lifecycle.stoppable``), then stop it."""
    reported: set[str] = set()
    try:
        while True:
            for name, started in sandbox.started.items():
                code = started.server.proc.poll()
                if code is not None and name not in reported:
                    reported.add(name)
                    echo(f"the sandbox's {name} server exited ({code}); its log: {started.server.log_path}")
            time.sleep(poll)
    finally:
        sandbox.stop()


def status(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The recorded state with each service's ``alive`` flag (PIDs checked), or None if none ran here."""
    current = state.read(Path(directory).expanduser().absolute())
    if current is None:
        return None
    for entry in current["services"].values():
        entry["alive"] = state.service_alive(entry)
    current["up_alive"] = state.up_process_alive(current)
    return current


def _recorded(current: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every server a state names: the running services and each process spawned on the way."""
    entries = [*(current or {}).get("services", {}).values(), *(current or {}).get("spawned", [])]
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("pid"), int)]


def down(directory: str | os.PathLike[str], timeout: float = 30.0) -> list[str]:
    """Stop every server the sandbox in ``directory`` started, by PID; the names that were running."""
    directory = Path(directory).expanduser().absolute()
    current = state.read(directory)
    if current is None:
        return []
    running = sorted(state.alive_services(current))
    if state.up_process_alive(current):  # a foreground `up`: let it stop its servers itself
        with contextlib.suppress(ProcessLookupError):
            os.kill(current["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while state.up_process_alive(current) and time.monotonic() < deadline:
            time.sleep(0.1)
        current = state.read(directory) or current
    for entry in _recorded(current):
        harness.stop_pid(entry["pid"], entry.get("ticks"))
    if current.get("status") != "stopped" or running:
        current.update(status="stopped", stopped=_now())
        state.write(directory, current)
    return running


def check(directory: str | os.PathLike[str]) -> list[tuple[str, bool, str]]:
    """Run each running service's faithful check: (name, passed, what was proven or what failed)."""
    directory = Path(directory).expanduser().absolute()
    current = status(directory)
    if current is None:
        raise SandboxError(f"no sandbox has run in {directory}: start one with `{state.up_command(directory)}`")
    cfg = tomllib.loads(files.read_text(directory / state.CONFIG, "the sandbox config is TOML", SandboxError))
    for section in (cfg.get("token", {}), *cfg.get("s3", {}).values(), cfg.get("onedata", {})):
        for key in ("client_secret", "refresh_token", "secret_access_key", "token"):
            secrets.register(section.get(key), f"sandbox {key}")
    registry.names()  # the built-in services registered
    results = []
    for name, entry in current["services"].items():
        service = registry.SERVICES.get(name)
        if service is None or service.check is None:
            continue
        if not entry["alive"]:
            results.append((name, False, "not running"))
            continue
        try:
            results.append((name, True, service.check(cfg)))
        except Exception as exc:  # a failed check is a result to show, not a crash
            results.append((name, False, secrets.redact(f"{type(exc).__name__}: {exc}")))
    return results
