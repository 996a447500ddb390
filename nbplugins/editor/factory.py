"""Install the factory metadata (code snippets, runtime images, the KFP catalog) where Elyra finds it.

A wheel install puts these files in ``sys.prefix/share/jupyter/metadata/<schemaspace>/`` through
``[tool.setuptools.data-files]``; an editable install (``pip install -e``, what ``make install``
does) skips data files, so ``make install`` runs ``python -m nbplugins.editor.factory`` after it.
Files are copied atomically and only when they differ; nothing else in those folders is touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nbplugins import files

SOURCE = Path(__file__).resolve().parent / "metadata"
SCHEMASPACES = ("code-snippets", "runtime-images", "component-catalogs")


def target(prefix: str | None = None) -> Path:
    """``<prefix>/share/jupyter/metadata``: the environment's folder of Elyra metadata."""
    return Path(prefix or sys.prefix) / "share" / "jupyter" / "metadata"


def shipped() -> list[Path]:
    """Every factory instance nbplugins ships, as paths relative to :data:`SOURCE`."""
    return sorted(p.relative_to(SOURCE) for space in SCHEMASPACES for p in (SOURCE / space).glob("*.json"))


def missing(prefix: str | None = None) -> list[Path]:
    """Shipped instances not installed (or outdated) under ``prefix``."""
    base = target(prefix)
    return [rel for rel in shipped()
            if not (base / rel).is_file() or (base / rel).read_bytes() != (SOURCE / rel).read_bytes()]


def install(prefix: str | None = None) -> list[Path]:
    """Copy the instances that are missing or differ; return the installed paths."""
    base = target(prefix)
    done = []
    for rel in missing(prefix):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(base / rel, (SOURCE / rel).read_bytes(), mode=0o644)
        done.append(base / rel)
    return done


if __name__ == "__main__":
    installed = install(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"nbplugins: {len(installed)} Elyra metadata file(s) installed under {target()}"
          if installed else f"nbplugins: Elyra metadata up to date under {target()}")
