"""Pipeline parameters for one run: ``--param`` strings typed like their defaults, and each
node's papermill parameters (its own, ``${name}`` references filled, then the pipeline
parameters it uses and its notebook declares). The runner and the export share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from nbplugins import config
from nbplugins.errors import ValidationError
from nbplugins.pipelines.model import Node, Pipeline, substitute


def coerce(value: str, default: Any) -> Any:
    """Convert a ``--param`` string to the type of the parameter's default (YAML rules if none)."""
    if isinstance(default, bool):
        return config.parse_bool(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def resolve_parameters(pipeline: Pipeline, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Pipeline parameter values for one run: defaults, then ``overrides`` (typed like the default)."""
    values = {name: p.default for name, p in pipeline.parameters.items()}
    for name, raw in (overrides or {}).items():
        if name not in pipeline.parameters:
            known = ", ".join(pipeline.parameters) or "none"
            raise ValidationError(f"{pipeline.where}: unknown pipeline parameter {name!r} (defined: {known})")
        try:
            values[name] = coerce(raw, pipeline.parameters[name].default) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise ValidationError(f"{pipeline.where}: parameter {name!r}: {exc}") from None
    for name, p in pipeline.parameters.items():
        if p.required and values.get(name) in (None, ""):
            raise ValidationError(f"{pipeline.where}: pipeline parameter {name!r} is required; pass --param {name}=...")
    return values


def node_parameters(pipeline: Pipeline, node: Node, values: Mapping[str, Any],
                    declared: Iterable[str] = ()) -> dict[str, Any]:
    """The papermill parameters of a node: its own (``${p}`` substituted), then used pipeline parameters."""
    params: dict[str, Any] = {}
    for name, value in node.parameters.items():
        params[name] = substitute(value, values)
    for name in node.pipeline_parameters:
        if name in declared and name not in params:
            params[name] = values[name]
    return params
