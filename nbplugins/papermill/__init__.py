"""Papermill plugins: the nbplugins engine and the s3:// / onedata:// I/O handlers.

papermill loads every ``papermill.engine`` entry point while it is imported; importing it
here first means that loading our engine from inside that registration finds papermill's
classes defined, whichever module a caller imports first.

Before that, other packages' engines are made lazy for processes that import nbplugins
first (our CLI, sweeps, the pipeline runner): Elyra's ``ElyraEngine`` alone pulls in
jupyter_server and costs about a second at every start. They still register under their
names and load the first time papermill uses them.
"""

from __future__ import annotations

from typing import Any

import entrypoints

GROUP = "papermill.engine"


class _LazyEngine:
    """Stands in for an engine class until papermill first uses it."""

    def __init__(self, entry_point: Any) -> None:
        self._entry_point = entry_point
        self._engine: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._engine is None:
            self._engine = self._entry_point.load()
        return getattr(self._engine, name)


class _LazyEntryPoint:
    def __init__(self, entry_point: Any) -> None:
        self.name = entry_point.name
        self._entry_point = entry_point

    def load(self) -> _LazyEngine:
        return _LazyEngine(self._entry_point)


def _defer_foreign_engines() -> None:
    original = entrypoints.get_group_all
    if getattr(original, "nbplugins_lazy", False):
        return

    def get_group_all(group: str, path: Any = None) -> list[Any]:
        found = original(group) if path is None else original(group, path)
        if group != GROUP:
            return found
        return [ep if ep.module_name.split(".")[0] == "nbplugins" else _LazyEntryPoint(ep) for ep in found]

    get_group_all.nbplugins_lazy = True  # type: ignore[attr-defined]
    entrypoints.get_group_all = get_group_all


_defer_foreign_engines()

import papermill  # noqa: E402, F401
