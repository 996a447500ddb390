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
