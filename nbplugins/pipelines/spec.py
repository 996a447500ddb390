"""Build an Elyra pipeline from a short YAML spec, so ``.pipeline`` files are generated, not hand-edited.

A spec names nodes by label, each running a template notebook (or a script) with papermill
parameters, and lists what each node waits for::

    name: flagship
    runtime_image: quay.io/jupyter/scipy-notebook:2025-03-14   # default for every node
    env: {MPLBACKEND: Agg}                                  # default env, nodes add to it
    parameters:                                             # pipeline parameters (--param k=v)
      min_humidity: {default: 30, description: drop drier readings}
    nodes:
      prepare:
        notebook: ../templates/prepare_table.ipynb          # relative to this spec file
        parameters: {output_path: prepared.csv, min_humidity: "${min_humidity}"}
        outputs: [prepared.csv]
      summary:
        notebook: ../templates/summarize_table.ipynb
        after: [prepare]
        parameters: {input_path: prepared.csv}

``"${name}"`` as a whole value takes pipeline parameter ``name`` (and records that the node
uses it, which Kubeflow needs). Env values may reference secrets (``@env:NAME``, ``@oidc``,
``@file:PATH``); they are resolved at run time and exported as Kubernetes secrets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from nbplugins import files
from nbplugins.errors import ValidationError
from nbplugins.pipelines import elyra
from nbplugins.pipelines.model import Node, Parameter, Pipeline, references, stable_id

_TOP = {"name", "description", "runtime_image", "env", "parameters", "nodes", "secret_name", "kubernetes_secrets",
        "mounted_volumes"}
_NODE = {"notebook", "script", "file", "parameters", "env", "after", "outputs", "dependencies",
         "include_subdirectories", "runtime_image", "description", "pipeline_parameters", "kubernetes_secrets",
         "mounted_volumes", "cpu", "memory", "gpu", "timeout"}


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"{where}: expected a list of strings")
    return list(value)


def _env(value: Any, where: str) -> dict[str, str]:
    env = _mapping(value, where)
    out = {}
    for k, v in env.items():
        if isinstance(v, (dict, list)) or v is None:
            raise ValidationError(f"{where}: {k} must be a string, number or boolean")
        out[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def load_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a YAML spec file into a mapping; ValidationError on YAML errors."""
    path = Path(path)
    try:
        doc = yaml.safe_load(files.read_text(path, "a spec is YAML text"))
    except yaml.YAMLError as exc:
        raise ValidationError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return _mapping(doc, str(path))


def from_spec(doc: dict[str, Any], spec_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
              *, source: str = "spec") -> Pipeline:
    """Turn a parsed spec into a laid-out Pipeline whose paths are relative to ``out_dir``."""
    spec_dir, out_dir = Path(spec_dir).resolve(), Path(out_dir).resolve()
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise ValidationError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP))})")
    name = doc.get("name") or Path(source).stem
    pipeline = Pipeline(
        name=str(name),
        description=str(doc.get("description") or "").strip(),
        runtime_image=doc.get("runtime_image"),
        env=_env(doc.get("env"), f"{source}: env"),
        secret_name=doc.get("secret_name") or "nbplugins-secrets",
        kubernetes_secrets=list(doc.get("kubernetes_secrets") or []),
        base_dir=out_dir,
        source=source,
    )
    if doc.get("mounted_volumes"):
        pipeline.defaults_extra["mounted_volumes"] = doc["mounted_volumes"]
    for pname, pdef in _mapping(doc.get("parameters"), f"{source}: parameters").items():
        if isinstance(pdef, dict):
            extra = sorted(set(pdef) - {"default", "description", "required"})
            if extra:
                raise ValidationError(f"{source}: parameter {pname!r}: unknown key {extra[0]!r}")
            pipeline.parameters[pname] = Parameter(pname, pdef.get("default"), str(pdef.get("description") or ""),
                                                   bool(pdef.get("required")))
        else:
            pipeline.parameters[pname] = Parameter(pname, pdef)
        if not str(pname).isidentifier():
            raise ValidationError(f"{source}: parameter name {pname!r} is not a Python identifier")

    nodes = _mapping(doc.get("nodes"), f"{source}: nodes")
    if not nodes:
        raise ValidationError(f"{source}: no nodes")
    ids = {label: stable_id(pipeline.name, str(label)) for label in nodes}
    for label, ndef in nodes.items():
        at = f"{source}: node {label!r}"
        ndef = _mapping(ndef, at)
        bad = sorted(set(ndef) - _NODE)
        if bad:
            raise ValidationError(f"{at}: unknown key {bad[0]!r} (known: {', '.join(sorted(_NODE))})")
        files = [ndef[k] for k in ("notebook", "script", "file") if ndef.get(k)]
        if len(files) != 1:
            raise ValidationError(f"{at}: give exactly one of notebook, script or file")
        rel = os.path.relpath(spec_dir / files[0], out_dir)
        after = _strings(ndef.get("after"), f"{at}: after")
        for parent in after:
            if parent not in ids:
                raise ValidationError(f"{at}: 'after' names unknown node {parent!r} (nodes: {', '.join(nodes)})")
        params = _mapping(ndef.get("parameters"), f"{at}: parameters")
        uses = _strings(ndef.get("pipeline_parameters"), f"{at}: pipeline_parameters")
        for value in params.values():
            uses.extend(name for name in references(value) if name not in uses)
        extra = {k: ndef[k] for k in ("mounted_volumes", "cpu", "memory", "gpu", "timeout") if k in ndef}
        timeout = extra.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise ValidationError(f"{at}: timeout must be a number of seconds above 0, got {type(timeout).__name__}")
        pipeline.nodes.append(Node(
            id=ids[label], label=str(label), filename=Path(rel).as_posix(),
            runtime_image=ndef.get("runtime_image"),
            parameters=dict(params),
            env=_env(ndef.get("env"), f"{at}: env"),
            pipeline_parameters=uses,
            dependencies=_strings(ndef.get("dependencies"), f"{at}: dependencies"),
            include_subdirectories=bool(ndef.get("include_subdirectories", False)),
            outputs=_strings(ndef.get("outputs"), f"{at}: outputs"),
            depends_on=[ids[p] for p in after],
            kubernetes_secrets=list(ndef.get("kubernetes_secrets") or []),
            extra=extra,
            description=str(ndef.get("description") or "").strip(),
        ))
    if pipeline.find_cycle() is None:
        pipeline.layout()
    return pipeline


def build(spec_path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Build ``spec.yaml`` into a validated ``.pipeline`` file (default: beside the spec)."""
    spec_path = Path(spec_path)
    output = Path(output) if output else spec_path.with_suffix(".pipeline")
    pipeline = from_spec(load_spec(spec_path), spec_path.parent, output.parent, source=str(spec_path))
    elyra.validate(pipeline)
    pipeline.source = str(output)
    return elyra.write(pipeline, output)
