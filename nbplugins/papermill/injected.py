"""The injected-parameters cell, built in one place for the engine and for exported pipelines.

Papermill writes every parameter as a literal. A secret must never be one (papermill keeps
parameters in the output twice), and a pipeline parameter of an exported node is only known
when the node runs on Kubeflow Pipelines: both are read from the kernel's environment
instead. :func:`source` writes the cell for Python and R kernels; :func:`inject` puts it where
papermill would (after the ``parameters`` cell), replacing an earlier one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nbformat
from papermill.translators import translate_parameters

from nbplugins import config
from nbplugins.errors import ValidationError

TAG = "injected-parameters"


def source(kernel_name: str, language: str, literal: Mapping[str, Any], *,
           from_env: Mapping[str, tuple[str, Any]] | None = None,
           secret_env: Mapping[str, str] | None = None) -> str:
    """The cell's code: ``literal`` values as papermill writes them; ``from_env`` names read
    from variable ``VAR`` (typed like ``default``) as ``{name: (VAR, default)}``; ``secret_env``
    names read from ``{name: VAR}``, which must be set."""
    from_env, secret_env = dict(from_env or {}), dict(secret_env or {})
    text = translate_parameters(kernel_name, language, dict(literal), "Parameters") if literal else ""
    if not (from_env or secret_env):
        return text
    if language == "python":
        lines = ["# Read from the kernel environment", "import os as _nbplugins_os"]
        for name, (var, default) in from_env.items():
            if isinstance(default, bool):
                lines.append(f'{name} = _nbplugins_os.environ.get("{var}", "{default}").lower() in {tuple(config.TRUE_WORDS)!r}')
            elif isinstance(default, int | float):
                lines.append(f'{name} = {type(default).__name__}(_nbplugins_os.environ.get("{var}", {default!r}))')
            else:
                lines.append(f'{name} = _nbplugins_os.environ.get("{var}", {default!r})')
        lines += [f'{name} = _nbplugins_os.environ["{var}"]' for name, var in secret_env.items()]
    elif language == "R":
        cast = {bool: "as.logical", int: "as.integer", float: "as.numeric"}
        lines = ["# Read from the kernel environment"]
        for name, (var, default) in from_env.items():
            fn = cast.get(type(default))
            value = f'Sys.getenv("{var}", "{default}")'
            lines.append(f"{name} <- {fn}({value})" if fn else f"{name} <- {value}")
        lines += [f'{name} <- Sys.getenv("{var}")' for name, var in secret_env.items()]
    else:
        raise ValidationError(f"parameters read from the environment need a Python or R kernel, not {language}")
    return text + "\n".join(lines) + "\n"


def inject(nb: Any, code: str) -> None:
    """Put an injected-parameters cell holding ``code`` after the ``parameters`` cell (or first),
    replacing the one papermill or an earlier run put there (its metadata is kept)."""
    old = next((i for i, c in enumerate(nb.cells) if TAG in c.get("metadata", {}).get("tags", [])), None)
    if old is not None:
        nb.cells[old] = nbformat.v4.new_code_cell(code, metadata=nb.cells[old].metadata)
        return
    cell = nbformat.v4.new_code_cell(code, metadata={"tags": [TAG]})
    index = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    nb.cells.insert(index, cell)
