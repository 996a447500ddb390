"""Notebook parameters: validation against the ``parameters`` cell, and secret references.

A parameter value that names a secret instead of holding it is resolved into the kernel's
environment; the injected cell reads it from there, so the value never lands in the notebook
(papermill writes every parameter twice: the injected cell and ``metadata.papermill``).

The reference syntax (``@oidc``, ``@env:NAME``, ``@file:PATH``) is defined in
:mod:`nbplugins.references`; ``@@text`` is the literal string ``@text``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from nbplugins.errors import ValidationError
from nbplugins.references import is_reference, resolve_reference

__all__ = ["is_reference", "resolve_reference", "split", "check", "declared", "env_name"]

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


def declared(nb: Any, kernel_name: str | None = None) -> dict[str, str]:
    """The parameters a notebook's ``parameters`` cell declares: name -> type name ({} without one).

    The one reader behind the engine's check, sweeps, the pipeline runner and export. Python
    cells are read with :mod:`ast` (IPython ``%`` and ``!`` lines aside); other languages through
    their papermill translator's public ``inspect``. A notebook that names no language is
    Python, as the pipeline runner runs it. A type is the annotation (or ``# type:`` comment),
    else the type of a literal value (``n = 1`` -> ``int``), else ``"None"``.
    """
    cell = parameters_cell(nb)
    if cell is None:
        return {}
    metadata = nb.get("metadata", {})
    language = metadata.get("kernelspec", {}).get("language") or metadata.get("language_info", {}).get("name")
    if (language or "python").lower() == "python":
        found = _python_declared(_text(cell.get("source", "")))
        if found is not None:
            return found
    return _translator_declared(cell, kernel_name or metadata.get("kernelspec", {}).get("name"), language)


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def _python_declared(source: str) -> dict[str, str] | None:
    """Names assigned at the top level of Python ``source`` -> type name; None if it does not parse."""
    try:
        tree = ast.parse(source, type_comments=True)
    except SyntaxError:
        try:  # IPython magics and shell escapes are not Python
            tree = ast.parse(re.sub(r"(?m)^(\s*)[%!].*$", r"\1pass", source), type_comments=True)
        except SyntaxError:
            return None
    found: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, annotation = stmt.targets, stmt.type_comment
        elif isinstance(stmt, ast.AnnAssign):
            targets = [stmt.target]
            annotation = stmt.annotation.value if isinstance(stmt.annotation, ast.Constant) \
                else ast.unparse(stmt.annotation)
        else:
            continue
        for target in targets:
            names = _assigned_names(target)
            kind = annotation or (_literal_type(stmt.value) if len(names) == 1 else None) or "None"
            found.update(dict.fromkeys(names, str(kind)))
    return found


def _assigned_names(target: ast.expr) -> list[str]:
    """The plain names an assignment target binds (``a``, ``a, (b, *c)``); attributes and items bind none."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Starred):
        return _assigned_names(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _assigned_names(element)]
    return []


def _literal_type(value: ast.expr | None) -> str | None:
    """The type name of a literal expression (``-1`` -> ``int``, ``None`` -> ``NoneType``), else None."""
    if value is None:
        return None
    try:
        return type(ast.literal_eval(value)).__name__
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _translator_declared(cell: Any, kernel_name: str | None, language: str | None) -> dict[str, str]:
    """Parameters as the notebook language's papermill translator reads them; {} if it cannot."""
    from papermill.exceptions import PapermillException
    from papermill.translators import papermill_translators

    try:
        found = papermill_translators.find_translator(kernel_name, language).inspect(cell)
    except (PapermillException, NotImplementedError):  # no translator, or one that cannot inspect
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


def parameters_cell(nb: Any) -> Any:
    """The notebook's first cell tagged ``parameters`` (the one papermill reads), or None."""
    return next((cell for cell in nb.get("cells", []) if "parameters" in cell.get("metadata", {}).get("tags", [])),
                None)


def has_parameters_cell(nb: Any) -> bool:
    """Whether a cell is tagged ``parameters``."""
    return parameters_cell(nb) is not None


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
