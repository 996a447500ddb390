"""Notebook parameters: validation against the ``parameters`` cell, and secret references.

A parameter value that names a secret instead of holding it is resolved into the kernel's
environment; the injected cell reads it from there, so the value never lands in the notebook
(papermill writes every parameter twice: the injected cell and ``metadata.papermill``).

The reference syntax (``@oidc``, ``@env:NAME``, ``@file:PATH``) is defined in
:mod:`nbplugins.secrets`; ``@@text`` is the literal string ``@text``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from nbplugins.errors import ValidationError
from nbplugins.secrets import is_reference, resolve_reference

__all__ = ["is_reference", "resolve_reference", "split", "check", "declared", "env_name", "reference_lines"]

ENV_PREFIX = "NBPLUGINS_SECRET_"


def unescape(value: Any) -> Any:
    """``@@text`` -> ``@text``; anything else unchanged."""
    if isinstance(value, str) and value.startswith("@@"):
        return value[1:]
    return value


def env_name(parameter: str) -> str:
    """The kernel environment variable that carries a secret parameter's value."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", parameter).upper()


def split(parameters: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Separate plain parameters (unescaped) from secret references."""
    plain, refs = {}, {}
    for name, value in parameters.items():
        if is_reference(value):
            refs[name] = value
        else:
            plain[name] = unescape(value)
    return plain, refs


def declared(nb: Any, kernel_name: str | None = None) -> dict[str, Any]:
    """The parameters a notebook's ``parameters`` cell declares: name -> inferred type name."""
    from papermill.inspection import _infer_parameters

    for cell in nb.cells:  # papermill expects every cell to have a tags list
        cell.setdefault("metadata", {}).setdefault("tags", [])
    # without a kernelspec, the language names papermill's translator just as well
    name = kernel_name or _kernel_or_language(nb)
    try:
        found = _infer_parameters(nb, name=name)
    except Exception:  # a language papermill cannot inspect: nothing known
        return {}
    return {p.name: _type_name(p.inferred_type_name, p.default) for p in found}


def _type_name(annotated: str, default: str) -> str:
    """The annotated type, else the type of the default's literal (``n = 1`` -> int)."""
    if annotated and annotated != "None":
        return annotated
    try:
        return type(ast.literal_eval(default)).__name__
    except (ValueError, SyntaxError, TypeError):
        return "None"


def has_parameters_cell(nb: Any) -> bool:
    return any("parameters" in cell.get("metadata", {}).get("tags", []) for cell in nb.cells)


def _kernel_or_language(nb: Any) -> str | None:
    metadata = nb.get("metadata", {})
    return metadata.get("kernelspec", {}).get("name") or metadata.get("language_info", {}).get("name")


def check(nb: Any, parameters: Mapping[str, Any], *, source: str, allow_unknown: bool = False,
          hint: str = "use --allow-unknown to pass them anyway") -> None:
    """Refuse parameters the notebook does not declare, listing the ones it does."""
    if not parameters or allow_unknown or not has_parameters_cell(nb):
        return
    if not _kernel_or_language(nb):  # not "declares: none": nothing says how to read the cell
        raise ValidationError(f"{source}: names no kernel or language in its metadata, so its parameters "
                              "cannot be read: open it in Jupyter, choose a kernel and save it")
    known = declared(nb)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        names = ", ".join(sorted(known)) or "none"
        raise ValidationError(
            f"{source}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(the parameters cell declares: {names}; {hint})"
        )


def reference_lines(refs: Mapping[str, str], language: str) -> str:
    """Code that reads each secret parameter from the kernel environment."""
    if language == "python":
        lines = ["import os as _nbplugins_os"]
        lines += [f'{name} = _nbplugins_os.environ["{env_name(name)}"]' for name in refs]
    elif language == "R":
        lines = [f'{name} <- Sys.getenv("{env_name(name)}")' for name in refs]
    else:
        raise ValidationError(f"secret parameter references need a Python or R kernel, not {language}")
    return "\n".join(lines) + "\n"
