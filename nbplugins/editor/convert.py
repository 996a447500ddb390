"""Turn the pipeline Elyra parsed from the editor's request into nbplugins' own model.

Elyra's parser keeps each node's file, image, dependencies, outputs, env vars and links, but
drops the ``app_data.nbplugins`` sections where nbplugins keeps what Elyra has no field for (a
node's papermill parameters, the pipeline parameters it uses, the pipeline's parameters with their
defaults). Those are read back from the saved ``.pipeline`` file the request names (``source``,
its base name), found next to the nodes' files, and matched by node id; the editor's request
wins for everything Elyra itself edits.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from nbplugins.errors import ValidationError
from nbplugins.pipelines import elyra as elyra_file
from nbplugins.pipelines.model import KINDS, Node, Pipeline
from nbplugins.references import is_reference

#: Recorded as the image of nodes the editor left without one: a local run ignores images, and
#: nbplugins' checks (made for exports) want one. It is the base of nbplugins' runtime image.
LOCAL_IMAGE = "quay.io/jupyter/scipy-notebook:2025-03-14"
#: How far up from a node's folder (and how many sibling folders) to look for the saved file.
_UP, _SIBLINGS = 3, 200


def _unsupported(pipeline: Any) -> list[str]:
    """One message per node the local runtime cannot run, before anything runs."""
    problems = []
    r_nodes = []
    for op in pipeline.operations.values():
        if op.classifier not in KINDS:
            problems.append(f"node {op.name!r} is a custom component ({op.classifier}), which runs on Kubeflow "
                            "Pipelines or Apache Airflow only; the local runtime runs notebooks, Python and R "
                            "scripts: remove it, or run the pipeline with a Kubeflow Pipelines or Airflow "
                            "runtime configuration")
        elif KINDS[op.classifier] == "r":
            r_nodes.append(op.name)
    if r_nodes and shutil.which("Rscript") is None:
        problems.append(f"node {r_nodes[0]!r} is an R script, but Rscript is not installed where this server runs; "
                        "install R (e.g. apt-get install r-base-core) or run the pipeline on Kubeflow Pipelines")
    return problems


def _secret_backed(op: Any) -> list[str]:
    """Env var names a node's ``kubernetes_secrets`` set (Elyra may have dropped them from its env vars)."""
    items = (op.elyra_props or {}).get("kubernetes_secrets") or []
    return [name for name in (getattr(item, "env_var", None) for item in items) if name]


def _unique(label: str, taken: set[str]) -> str:
    name, n = label, 1
    while name in taken:
        n += 1
        name = f"{label} ({n})"
    taken.add(name)
    return name


def saved_file(source: str | None, root: Path, filenames: list[str], ids: set[str]) -> Path | None:
    """The saved ``.pipeline`` file the editor's request came from: named ``source``, holding every node id."""
    if not source or not source.endswith(".pipeline") or "/" in source or "\\" in source:
        return None
    seen: set[Path] = set()
    candidates: list[Path] = []
    starts = [Path(os.getcwd())] + [(root / f).parent for f in filenames]
    for start in starts:
        folder = start.resolve()
        for _ in range(_UP + 1):
            for place in [folder, *sorted(p for p in _subdirs(folder))]:
                if place not in seen:
                    seen.add(place)
                    candidates.append(place / source)
            if folder.parent == folder:
                break
            folder = folder.parent
    for path in candidates:
        if path.is_file() and ids <= _node_ids(path):
            return path
    return None


def _subdirs(folder: Path) -> list[Path]:
    try:
        out = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if len(out) >= _SIBLINGS:
                    break
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                    out.append(Path(entry.path))
        return out
    except OSError:
        return []


def _node_ids(path: Path) -> set[str]:
    try:
        doc = json.loads(path.read_text())
        return {n.get("id") for p in doc.get("pipelines", []) for n in p.get("nodes", [])}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def from_elyra(pipeline: Any, root_dir: str | os.PathLike[str]) -> tuple[Pipeline, dict[str, Any], Path | None]:
    """(nbplugins pipeline, pipeline parameter values, the saved file its settings came from).

    Raises ValidationError naming every node the local runtime cannot run, before anything runs.
    """
    problems = _unsupported(pipeline)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValidationError(f"pipeline {pipeline.name!r}: {problems[0]}{more}; nothing was run")
    root = Path(root_dir or os.getcwd()).resolve()
    ops = list(pipeline.operations.values())
    saved_path = saved_file(pipeline.source, root, [op.filename for op in ops], {op.id for op in ops})
    saved = None
    if saved_path is not None:
        try:
            saved = elyra_file.read(saved_path)
        except ValidationError:  # a broken saved file: the request alone still runs
            saved_path = None
    saved_nodes = saved.by_id() if saved else {}
    ours = Pipeline(name=pipeline.name or "pipeline", base_dir=root, description=pipeline.description or "",
                    source=f"pipeline {pipeline.name!r}")
    if saved:
        ours.parameters = dict(saved.parameters)
        ours.secret_name = saved.secret_name
    taken: set[str] = set()
    for op in ops:
        env = {k: str(v) for k, v in (op.env_vars.to_dict() if op.env_vars else {}).items() if v not in (None, "")}
        extra = {k: v for k, v in op.component_props_as_dict.items() if k == "timeout"}
        node = Node(id=op.id, label=_unique(op.name, taken), filename=op.filename,
                    runtime_image=op.runtime_image or None, env=env,
                    dependencies=list(op.dependencies or []), include_subdirectories=bool(op.include_subdirectories),
                    outputs=list(op.outputs or []), depends_on=list(op.parent_operation_ids or []),
                    kind=KINDS[op.classifier], extra=extra)
        if op.id in saved_nodes:
            kept = saved_nodes[op.id]
            # Elyra drops an env var that a Kubernetes secret also sets unless the runtime config is
            # literally "local" (the editor sends none): a secret reference of the saved file comes back
            for name in _secret_backed(op):
                value = saved.env_of(kept).get(name) if saved else None
                if name not in env and is_reference(value):
                    env[name] = value
            node.parameters = dict(kept.parameters)
            node.pipeline_parameters = list(kept.pipeline_parameters)
            node.description = kept.description
            if "timeout" in kept.extra and "timeout" not in node.extra:
                node.extra["timeout"] = kept.extra["timeout"]
        ours.nodes.append(node)
    if any(not n.runtime_image for n in ours.nodes):
        ours.runtime_image = LOCAL_IMAGE
    values = {}
    for param in getattr(pipeline, "pipeline_parameters", None) or []:  # values typed in Elyra's Run dialog
        if getattr(param, "name", None) in ours.parameters and getattr(param, "value", None) not in (None, ""):
            values[param.name] = param.value
    return ours, values, saved_path
