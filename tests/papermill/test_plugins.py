"""Importing nbplugins' papermill plugins first keeps other packages' papermill engines lazy."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import nbplugins.papermill
from papermill.engines import papermill_engines
assert "elyra.pipeline.elyra_engine" not in sys.modules, "Elyra's engine was imported eagerly"
assert "jupyter_server" not in sys.modules
engine = papermill_engines.get_engine("ElyraEngine")
assert engine.execute_managed_notebook.__qualname__ == "ElyraEngine.execute_managed_notebook"
assert "elyra.pipeline.elyra_engine" in sys.modules
print(papermill_engines.get_engine("nbplugins").__name__)
"""


def test_foreign_papermill_engines_load_only_when_used_and_ours_is_eager():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "NbpluginsEngine"


AFTER_USE = """
import importlib, sys
try:
    import entrypoints
except ImportError:  # a papermill that reads its entry points with importlib.metadata
    entrypoints = None
import nbplugins.papermill
from papermill.engines import papermill_engines
assert entrypoints is None or not hasattr(entrypoints.get_group_all, "nbplugins_lazy"), "entrypoints was patched"
assert "elyra.pipeline.elyra_engine" not in sys.modules, "a stand-in module was left behind"
lazy = papermill_engines.get_engine("ElyraEngine")
assert "ElyraEngine" in repr(lazy) and "lazy" in repr(lazy)
lazy.nb_kernel_name  # first use: loads the engine and registers the class itself
from elyra.pipeline.elyra_engine import ElyraEngine
assert papermill_engines.get_engine("ElyraEngine") is ElyraEngine
assert importlib.import_module("elyra.pipeline.elyra_engine").ElyraEngine is ElyraEngine
print("ok")
"""

PAPERMILL_FIRST = """
import sys
import papermill
from papermill.engines import papermill_engines
assert "elyra.pipeline.elyra_engine" in sys.modules, "a process that imported papermill first was changed"
print(papermill_engines.get_engine("ElyraEngine").__name__, papermill_engines.get_engine("nbplugins").__name__)
"""


def test_a_lazy_engine_becomes_the_engine_itself_and_nothing_is_patched():
    done = subprocess.run([sys.executable, "-c", AFTER_USE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_process_that_imports_papermill_first_keeps_papermills_own_registration():
    done = subprocess.run([sys.executable, "-c", PAPERMILL_FIRST], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ElyraEngine", "NbpluginsEngine"]
