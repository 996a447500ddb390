"""Papermill plugins: the nbplugins engine and the s3:// / onedata:// I/O handlers.

papermill loads every ``papermill.engine`` entry point while it is imported; importing it
here first means that loading our engine from inside that registration finds papermill's
classes defined, whichever module a caller imports first.

Other packages' engines stay unloaded until used when nbplugins is what imports papermill
(our CLI, sweeps, the pipeline runner): Elyra's ``ElyraEngine`` alone pulls in jupyter_server
and costs most of a second at every start. While papermill registers its entry points, each
foreign engine's module is a stand-in whose attribute is a :class:`LazyEngine`; the stand-ins
leave ``sys.modules`` as soon as papermill is imported. A lazy engine loads its entry point
(``importlib.metadata``) the first time papermill uses it and puts the real class into
papermill's registry (``papermill_engines.register``). This relies only on how any entry-point
reader loads ``module:attr`` (import the module, get the attribute), not on which library
papermill reads them with. A process that imported papermill before nbplugins keeps
papermill's own, eager, registration.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any

GROUP = "papermill.engine"


class LazyEngine:
    """Another package's papermill engine, loaded the first time papermill uses it."""

    def __init__(self, entry_point: EntryPoint) -> None:
        self._entry_point = entry_point
        self._engine: Any = None

    def _load_engine(self) -> Any:
        """Import the engine now and register the class itself in place of this stand-in."""
        if self._engine is None:
            self._engine = self._entry_point.load()
            from papermill.engines import papermill_engines

            papermill_engines.register(self._entry_point.name, self._engine)
        return self._engine

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._load_engine(), name)

    def __repr__(self) -> str:
        return f"<lazy papermill engine {self._entry_point.name!r} ({self._entry_point.value})>"


def _foreign_engines() -> list[EntryPoint]:
    """``papermill.engine`` entry points of other packages whose module is not imported yet."""
    return [ep for ep in entry_points(group=GROUP)
            if ep.module.split(".")[0] != "nbplugins" and ep.module not in sys.modules
            and ep.attr and "." not in ep.attr]


@contextlib.contextmanager
def _foreign_engines_deferred() -> Iterator[None]:
    """While the block runs, loading a foreign engine's entry point gives a :class:`LazyEngine`."""
    stand_ins: dict[str, types.ModuleType] = {}
    for ep in _foreign_engines():
        module = stand_ins.setdefault(ep.module, types.ModuleType(ep.module, "nbplugins: loaded when used"))
        setattr(module, ep.attr, LazyEngine(ep))
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


if "papermill" in sys.modules:  # imported first by someone else (papermill's CLI, Elyra): leave it be
    import papermill  # noqa: F401
else:
    with _foreign_engines_deferred():
        import papermill  # noqa: F401
