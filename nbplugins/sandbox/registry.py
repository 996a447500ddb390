"""The sandbox's services: one small registry entry each (a name, a start function, a check).

A :class:`Service` starts its server on the port it is given (``start(context, port)``),
returns it with the config tables it contributes to the ``sandbox`` profile, may load sample
data once it runs (``seed``), and proves itself faithful with the official client (``check``,
given the sandbox's parsed config). Adding a service is one :func:`register` call; see
:mod:`nbplugins.sandbox.services` for the built-in ones.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbplugins.sandbox import harness
from nbplugins.sandbox.state import SandboxError

INSTALL = "pip install 'nbplugins[sandbox]'"


@dataclass(frozen=True)
class Tool:
    """Something a service needs installed: a command or an importable module, and its package."""

    name: str
    package: str
    module: bool = False  # an importable Python module rather than a command

    def found(self) -> bool:
        if self.module:
            return importlib.util.find_spec(self.name) is not None
        command = harness.venv_bin(self.name)
        return Path(command).is_file() or shutil.which(command) is not None


@dataclass
class Context:
    """What a start function gets: the sandbox folder and the services started before it."""

    dir: Path
    detach: bool
    started: dict[str, Started] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    def data_dir(self, name: str) -> Path:
        """The service's own folder under the sandbox folder (kept between runs)."""
        path = self.dir / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path


@dataclass
class Started:
    """A running service: its server, its profile settings, its secrets and what ``status`` shows."""

    server: harness.ServerProcess
    settings: dict[str, dict[str, Any]]  # config tables, e.g. {"s3.sandbox": {...}, "storage": {...}}
    secrets: tuple[str, ...] = ()  # values that must never reach an output
    info: dict[str, str] = field(default_factory=dict)  # public facts: bucket, space, user
    data: list[str] = field(default_factory=list)  # URLs of the sample data loaded


@dataclass(frozen=True)
class Service:
    """One sandbox service."""

    name: str
    summary: str
    start: Callable[[Context, int], Started]
    check: Callable[[dict[str, Any]], str] | None = None  # faithful check on the parsed config
    seed: Callable[[Started, Context], list[str]] | None = None  # load sample data once it runs
    tools: tuple[Tool, ...] = ()


SERVICES: dict[str, Service] = {}


def register(service: Service) -> Service:
    """Add (or replace) a service; the order of registration is the order of starting."""
    SERVICES[service.name] = service
    return service


def names() -> list[str]:
    """Every registered service, in starting order."""
    _load_builtin()
    return list(SERVICES)


def select(wanted: list[str] | None) -> list[Service]:
    """The services named (all when None), in starting order; unknown names refused."""
    known = names()
    if not wanted:
        return [SERVICES[n] for n in known]
    unknown = [n for n in wanted if n not in SERVICES]
    if unknown:
        raise SandboxError(f"unknown sandbox service {', '.join(map(repr, unknown))}: "
                           f"choose from {', '.join(known)}")
    return [SERVICES[n] for n in known if n in wanted]


def check_tools(services: list[Service]) -> None:
    """Refuse to start anything when a service's tool is missing; say what installs it."""
    for service in services:
        missing = [t for t in service.tools if not t.found()]
        if missing:
            what = ", ".join(f"{t.name} (package {t.package})" for t in missing)
            raise SandboxError(f"the sandbox's {service.name} service needs {what}, which is not installed: "
                               f"run {INSTALL}")


def _load_builtin() -> None:
    import nbplugins.sandbox.services  # noqa: F401 - registers the built-in services on import
