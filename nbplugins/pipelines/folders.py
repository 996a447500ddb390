"""Files into and out of a node's folder: what a dependency or output pattern names, and copies.

The runner stages a node's folder with these and the export builds a node's archive with
them, so a pipeline sees the same files locally and on Kubeflow Pipelines or Airflow.
Patterns are checked by :mod:`nbplugins.paths` before they get here.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path


def copy(src: Path, dst: Path) -> None:
    """Copy a file or a folder (merged into an existing one) to ``dst``, making its parents."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def matches(base: Path, pattern: str, recursive: bool = False) -> list[Path]:
    """The paths under ``base`` a dependency or output names: a glob (sorted), or one path if it exists."""
    if any(c in pattern for c in "*?["):
        return [Path(p) for p in sorted(glob.glob(str(base / pattern), recursive=recursive))]
    path = base / pattern
    return [path] if path.exists() else []
