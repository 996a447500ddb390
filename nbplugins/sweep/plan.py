"""A sweep's plan: one :class:`PlannedRun` per parameter set, each mapped to its own output path.

Output patterns are filled with values from grids and tables: every value must stay one path
segment and every local output inside the pattern's folder (:mod:`nbplugins.paths`).
"""

from __future__ import annotations

import logging
import os
import string
from dataclasses import dataclass, field
from typing import Any

from nbplugins import paths
from nbplugins.errors import ValidationError
from nbplugins.papermill import parameters
from nbplugins.papermill.engine import _load

log = logging.getLogger(__name__)


@dataclass
class PlannedRun:
    """One run of a sweep (its parameters and output path) and, once done, its outcome."""

    index: int
    parameters: dict[str, Any]
    output: str
    status: str = "pending"  # pending | running | ok | failed | skipped (finished by an earlier sweep)
    duration: float | None = None
    error: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


def _fields(pattern: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(pattern) if name}
    except ValueError as exc:  # an unbalanced { or }
        raise ValidationError(f"output pattern {pattern!r}: {exc} (fields are {{name}}; "
                              "write {{ or }} for a literal brace)") from None


def plan(template: str, sets: list[dict[str, Any]], output_pattern: str, *,
         allow_unknown: bool = False) -> list[PlannedRun]:
    """Check the parameter sets against the template and map each to its output path.

    Refuses unknown parameters (listing the valid names) and two runs with one output path.
    Values come from grids and tables: each one filled into the pattern must be one path
    segment (:func:`nbplugins.paths.safe_component`), and a local output must stay inside the
    folder of the pattern's fixed beginning (``out/`` for ``out/{a}/{b}.ipynb``).
    """
    if not sets:
        raise ValidationError("the sweep has no parameter sets")
    nb = _load(template)
    if not parameters.has_parameters_cell(nb):
        log.warning("%s has no cell tagged 'parameters': values are injected at the top", template)
    names = sorted(set().union(*sets))
    parameters.check(nb, dict.fromkeys(names), source=template, allow_unknown=allow_unknown)
    missing = _fields(output_pattern) - set(names) - {"index"}
    if missing:
        raise ValidationError(f"output pattern {output_pattern!r}: {', '.join(sorted(missing))} is not a parameter "
                              f"(use {{index}} or one of: {', '.join(names)})")
    formatter = string.Formatter()
    pieces = [(name, spec, conv) for _, name, spec, conv in formatter.parse(output_pattern) if name is not None]
    fixed = next(iter(formatter.parse(output_pattern)), ("",))[0] if pieces else output_pattern
    root = None if "://" in output_pattern else os.path.abspath(os.path.dirname(fixed) or ".")
    runs, seen = [], {}
    for i, params in enumerate(sets):
        values = {**{k: _plain(v) for k, v in params.items()}, "index": i}
        try:
            output = output_pattern.format(**values)
            for name, spec, conv in pieces:  # each filled-in value must stay one path segment
                text = formatter.format_field(formatter.convert_field(formatter.get_field(name, (), values)[0], conv),
                                              spec or "")
                paths.safe_component(text, f"run {i}: parameter {name!r} value")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValidationError(f"output pattern {output_pattern!r} does not fit run {i}: {exc}") from None
        except ValidationError as exc:
            raise ValidationError(f"output pattern {output_pattern!r}: {exc}; nothing was run") from None
        if root is not None:
            output = os.path.abspath(output)
            used = ", ".join(f"{name}={values[name]!r}" for name in dict.fromkeys(n for n, _, _ in pieces))
            try:
                paths.inside(root, os.path.relpath(output, root), "output")
            except ValidationError:
                raise ValidationError(f"output pattern {output_pattern!r}: run {i} ({used}) would write {output}, "
                                      f"outside {root}; nothing was run") from None
        if output in seen:
            raise ValidationError(
                f"output pattern {output_pattern!r} maps runs {seen[output]} and {i} to {output}: "
                "add a parameter that differs, or {index}")
        seen[output] = i
        runs.append(PlannedRun(index=i, parameters=params, output=output))
    return runs


def _plain(value: Any) -> Any:
    return "secret" if parameters.is_reference(value) else value
