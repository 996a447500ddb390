"""Read, write and validate Elyra ``.pipeline`` files (pipeline-flow v3.0, Elyra app_data version 8).

What Elyra 4.x expects, and what this module therefore writes:

* top-level ``"version": "3.0"`` (a string) and ``pipelines[0].app_data.version`` 8;
* a ``runtime_image`` on every node, even for local runs;
* ``env_vars`` as ``{"env_var", "value"}`` objects (Elyra drops old ``NAME=value`` strings
  silently, so reading one is an error here);
* dependencies between nodes only through ``inputs[0].links`` (``port_id_ref: outPort``);
* node positions laid out in columns by topological depth so the editor shows a readable graph.

nbplugins' own settings live where Elyra keeps app data it does not interpret: a node's
papermill parameters and the pipeline parameters it uses under ``app_data.nbplugins``, the
pipeline parameters and the Kubernetes secret name under the pipeline's ``app_data.nbplugins``.
(Elyra's own ``pipeline_parameters`` exist only for Kubeflow-typed pipelines and crash
``elyra-pipeline validate`` on generic ones; :mod:`nbplugins.pipelines.export` writes them when
it targets Kubeflow.) An environment value that references a secret (``@env:NAME``,
``@file:PATH``, ``@oidc``) is also written as a ``kubernetes_secrets`` entry, so Elyra's
exporters use the Kubernetes secret and never a value.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

from nbplugins import files
from nbplugins.errors import ValidationError
from nbplugins.pipelines.model import (
    KINDS,
    Node,
    Parameter,
    Pipeline,
    references,
    stable_id,
)
from nbplugins.references import is_reference

SCHEMA_VERSION = "3.0"
APP_VERSION = 8
JSON_SCHEMA = "http://api.dataplatform.ibm.com/schemas/common-pipeline/pipeline-flow/pipeline-flow-v3-schema.json"
SCHEMA_DIR = Path(__file__).with_name("schemas")

#: component_parameters this module owns; anything else on a node is kept verbatim.
_OWNED = {"filename", "runtime_image", "dependencies", "include_subdirectories", "outputs", "env_vars",
          "kubernetes_secrets"}
#: list properties the Elyra editor always writes (empty when unused).
_EMPTY_LISTS = ("mounted_volumes", "kubernetes_pod_annotations", "kubernetes_pod_labels", "kubernetes_tolerations")
_UI = {
    "notebook": ("/static/elyra/notebook.svg", "Run notebook file"),
    "python": ("/static/elyra/python.svg", "Run Python script"),
    "r": ("/static/elyra/r-logo.svg", "Run R script"),
}
IMAGE = re.compile(r"[^/ ]+/[^/ ]+$")  # Elyra's own check: [registry/]owner/image:tag
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def secret_key(reference: str) -> str:
    """The Kubernetes secret key an env reference maps to (``@env:NAME`` -> ``NAME``)."""
    kind, _, arg = reference[1:].partition(":")
    if kind == "env":
        return arg
    if kind == "oidc":
        return "OIDC_ACCESS_TOKEN"
    return re.sub(r"[^-._a-zA-Z0-9]", "-", os.path.basename(arg)) or "file"


def derived_secrets(env: dict[str, str], secret_name: str) -> list[dict[str, str]]:
    """``kubernetes_secrets`` entries for env values that reference secrets."""
    return [{"env_var": name, "name": secret_name, "key": secret_key(value)}
            for name, value in env.items() if is_reference(value)]


# ----------------------------------------------------------------------------- write


def _env_list(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"env_var": k, "value": str(v)} for k, v in env.items()]


def _node_dict(pipeline: Pipeline, node: Node) -> dict[str, Any]:
    image, description = _UI[node.kind]
    x, y = node.position or (60.0, 60.0)
    params: dict[str, Any] = {
        "filename": node.filename,
        "runtime_image": pipeline.image_of(node) or "",
        "dependencies": list(node.dependencies),
        "include_subdirectories": node.include_subdirectories,
        "outputs": list(node.outputs),
        "env_vars": _env_list(node.env),
        "kubernetes_secrets": node.kubernetes_secrets + derived_secrets(pipeline.env_of(node), pipeline.secret_name),
    }
    for key in _EMPTY_LISTS:
        params[key] = []
    params.update(node.extra)
    app: dict[str, Any] = {
        "component_parameters": params,
        "label": node.label,
        "ui_data": {"label": node.label, "image": image, "x_pos": x, "y_pos": y, "description": description},
    }
    ours = {k: v for k, v in (("parameters", node.parameters), ("pipeline_parameters", node.pipeline_parameters),
                              ("description", node.description)) if v}
    if ours:
        app["nbplugins"] = ours
    port_ui = {"cardinality": {"min": 0, "max": -1}}
    inport: dict[str, Any] = {"id": "inPort", "app_data": {"ui_data": {**port_ui, "label": "Input Port"}}}
    if node.depends_on:
        inport["links"] = [{"id": stable_id(pipeline.name, "link", parent, node.id), "node_id_ref": parent,
                            "port_id_ref": "outPort"} for parent in node.depends_on]
    return {
        "id": node.id,
        "type": "execution_node",
        "op": node.op,
        "app_data": app,
        "inputs": [inport],
        "outputs": [{"id": "outPort", "app_data": {"ui_data": {**port_ui, "label": "Output Port"}}}],
    }


def to_dict(pipeline: Pipeline) -> dict[str, Any]:
    """The Elyra pipeline-flow document for ``pipeline``."""
    defaults: dict[str, Any] = {
        "runtime_image": pipeline.runtime_image or "",
        "env_vars": _env_list(pipeline.env),
        "kubernetes_secrets": list(pipeline.kubernetes_secrets),
    }
    for key in _EMPTY_LISTS:
        defaults[key] = []
    defaults.update(pipeline.defaults_extra)
    if not defaults["runtime_image"]:
        del defaults["runtime_image"]
    properties: dict[str, Any] = {"name": pipeline.name, "runtime": "Generic"}
    if pipeline.description:
        properties["description"] = pipeline.description
    properties["pipeline_defaults"] = defaults
    app: dict[str, Any] = {"ui_data": {"comments": []}, "version": APP_VERSION, "properties": properties}
    ours: dict[str, Any] = {"secret_name": pipeline.secret_name}
    if pipeline.parameters:
        ours["parameters"] = [
            {"name": p.name, "default": p.default, "description": p.description, "required": p.required}
            for p in pipeline.parameters.values()
        ]
    app["nbplugins"] = ours
    return {
        "doc_type": "pipeline",
        "version": SCHEMA_VERSION,
        "json_schema": JSON_SCHEMA,
        "id": stable_id(pipeline.name),
        "primary_pipeline": "primary",
        "pipelines": [{"id": "primary", "nodes": [_node_dict(pipeline, n) for n in pipeline.nodes],
                       "app_data": app, "runtime_ref": ""}],
        "schemas": [],
    }


def dumps(pipeline: Pipeline) -> str:
    return json.dumps(to_dict(pipeline), indent=2, ensure_ascii=False) + "\n"


def write(pipeline: Pipeline, path: str | os.PathLike[str]) -> Path:
    """Write the ``.pipeline`` file atomically (temp name, then rename), after a schema check."""
    path = Path(path)
    text = dumps(pipeline)
    schema_errors(json.loads(text), raise_first=True, where=str(path))
    files.write_atomic(path, text, mode=None)
    return path


# ----------------------------------------------------------------------------- read


def _fail(where: str, message: str) -> ValidationError:
    return ValidationError(f"{where}: {message}")


def _label(raw: dict[str, Any]) -> str:
    app = raw.get("app_data") or {}
    return (app.get("ui_data") or {}).get("label") or app.get("label") or raw.get("id", "?")


def _env_from(items: Any, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or []:
        if isinstance(item, str):
            raise ValidationError(
                f"{where}: env_vars entry {item.split('=', 1)[0]!r} is a 'NAME=value' string, which Elyra 4 "
                'drops silently; write {"env_var": "NAME", "value": "..."}')
        if not isinstance(item, dict) or not item.get("env_var"):
            raise ValidationError(f"{where}: env_vars entries need an 'env_var' name")
        if item.get("value") not in (None, ""):  # Elyra discards variables without a value
            env[str(item["env_var"])] = str(item["value"])
    return env


def from_dict(doc: dict[str, Any], base_dir: str | os.PathLike[str] = ".", source: str | None = None) -> Pipeline:
    """Build a :class:`Pipeline` from an Elyra document; refuse what Elyra 4.x would not run."""
    where = source or "pipeline"
    if not isinstance(doc, dict):
        raise _fail(where, "not a JSON object")
    version = doc.get("version")
    if version != SCHEMA_VERSION:
        raise _fail(where, f'wrong version field: top-level "version" must be the string "3.0", found {version!r}')
    pipelines = doc.get("pipelines")
    if not isinstance(pipelines, list) or not pipelines:
        raise _fail(where, "no 'pipelines' list")
    primary = next((p for p in pipelines if p.get("id") == doc.get("primary_pipeline")), None)
    if primary is None:
        raise _fail(where, f"primary_pipeline {doc.get('primary_pipeline')!r} is not among the pipelines")
    app = primary.get("app_data") or {}
    app_version = app.get("version")
    if app_version != APP_VERSION:
        hint = ("open and save it in the Elyra 4 editor to migrate it" if isinstance(app_version, int)
                and app_version < APP_VERSION else f"this Elyra reads version {APP_VERSION} only")
        raise _fail(where, f"wrong version field: pipelines[0].app_data.version must be {APP_VERSION}, "
                           f"found {app_version!r} ({hint})")
    props = app.get("properties") or {}
    defaults = dict(props.get("pipeline_defaults") or {})
    ours = app.get("nbplugins") or {}
    pipeline = Pipeline(
        name=props.get("name") or Path(source or "pipeline").stem,
        runtime_image=defaults.pop("runtime_image", None) or None,
        env=_env_from(defaults.pop("env_vars", []), f"{where}: pipeline_defaults"),
        kubernetes_secrets=list(defaults.pop("kubernetes_secrets", []) or []),
        secret_name=ours.get("secret_name") or "nbplugins-secrets",
        description=props.get("description") or "",
        base_dir=Path(base_dir),
        source=source,
    )
    for key in _EMPTY_LISTS:
        if defaults.get(key) == []:
            defaults.pop(key)
    pipeline.defaults_extra = defaults
    for p in ours.get("parameters") or []:
        pipeline.parameters[p["name"]] = Parameter(p["name"], p.get("default"), p.get("description") or "",
                                                   bool(p.get("required")))

    raw_nodes = primary.get("nodes") or []
    ids = {n.get("id") for n in raw_nodes}
    for raw in raw_nodes:
        label = _label(raw)
        at = f"{where}: node {label!r}"
        if raw.get("type") != "execution_node":
            raise _fail(at, f"node type {raw.get('type')!r} is not supported (only execution_node; "
                            "expand super-nodes in the editor)")
        if raw.get("op") not in KINDS:
            raise _fail(at, f"op {raw.get('op')!r} is not a generic notebook/Python/R node")
        napp = raw.get("app_data") or {}
        params = dict(napp.get("component_parameters") or {})
        filename = params.pop("filename", None)
        if not filename:
            raise _fail(at, "no filename")
        links = []
        inputs = raw.get("inputs") or []
        for port in inputs[:1]:
            for link in port.get("links") or []:
                parent = link.get("node_id_ref")
                if link.get("port_id_ref", "outPort") != "outPort":
                    raise _fail(at, f"link {link.get('id')!r} uses port {link.get('port_id_ref')!r}; "
                                    "only links to 'outPort' are supported")
                if parent not in ids:
                    raise _fail(at, f"link to unknown node {parent!r}")
                if parent not in links:
                    links.append(parent)
        env = _env_from(params.pop("env_vars", []), at)
        secrets = list(params.pop("kubernetes_secrets", []) or [])
        nours = napp.get("nbplugins") or {}
        node = Node(
            id=raw["id"],
            label=label,
            filename=filename,
            runtime_image=params.pop("runtime_image", None) or None,
            parameters=dict(nours.get("parameters") or {}),
            env=env,
            pipeline_parameters=list(nours.get("pipeline_parameters") or []),
            dependencies=list(params.pop("dependencies", []) or []),
            include_subdirectories=bool(params.pop("include_subdirectories", False)),
            outputs=list(params.pop("outputs", []) or []),
            depends_on=links,
            kind=KINDS[raw["op"]],
            description=nours.get("description") or "",
        )
        ui = napp.get("ui_data") or {}
        if "x_pos" in ui and "y_pos" in ui:
            node.position = (ui["x_pos"], ui["y_pos"])
        # drop the secret entries this module derives from env references; keep the rest
        derived = derived_secrets({**pipeline.env, **env}, pipeline.secret_name)
        node.kubernetes_secrets = [s for s in secrets if s not in derived]
        for key in _EMPTY_LISTS:
            if params.get(key) == []:
                params.pop(key)
        node.extra = params
        pipeline.nodes.append(node)
    if pipeline.runtime_image:  # Elyra writes the default into nodes; keep the file's own shape
        for node in pipeline.nodes:
            if node.runtime_image == pipeline.runtime_image:
                node.runtime_image = None
    return pipeline


def read(path: str | os.PathLike[str]) -> Pipeline:
    """Read and structurally check a ``.pipeline`` file (schema, versions, links)."""
    path = Path(path)
    try:
        doc = json.loads(files.read_text(path, "a .pipeline file is JSON text"))
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(doc, dict) and doc.get("version") != SCHEMA_VERSION:
        from_dict(doc, path.parent, str(path))  # raises the clearer version message
    schema_errors(doc, raise_first=True, where=str(path))
    return from_dict(doc, path.parent.resolve(), str(path))


# ----------------------------------------------------------------------------- validate


@cache
def _validator() -> Any:
    import jsonschema
    from referencing import Registry, Resource

    main = json.loads((SCHEMA_DIR / "pipeline-flow-v3-schema.json").read_text())
    ui = json.loads((SCHEMA_DIR / "pipeline-flow-ui-v3-schema.json").read_text())
    registry = Registry().with_resources([
        (main["id"], Resource.from_contents(main, default_specification=_draft4())),
        (ui["id"], Resource.from_contents(ui, default_specification=_draft4())),
        (main["id"].replace("https://", "http://"), Resource.from_contents(main, default_specification=_draft4())),
    ])
    return jsonschema.Draft4Validator(main, registry=registry)


def _draft4() -> Any:
    from referencing.jsonschema import DRAFT4

    return DRAFT4


def schema_errors(doc: Any, *, raise_first: bool = False, where: str = "pipeline") -> list[str]:
    """Problems against the pipeline-flow v3 JSON schema, each naming the node it is in."""
    messages = []
    for error in sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path)):
        path = list(error.absolute_path)
        prefix = ""
        if len(path) >= 4 and path[0] == "pipelines" and path[2] == "nodes":
            with contextlib.suppress(KeyError, IndexError, TypeError):
                prefix = f"node {_label(doc['pipelines'][path[1]]['nodes'][path[3]])!r}: "
        at = "/".join(str(p) for p in path) or "(top level)"
        messages.append(f"{prefix}schema: {error.message} at {at}")
    if messages and raise_first:
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        raise ValidationError(f"{where}: {messages[0]}{more}")
    return messages


def declared(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """Parameters a notebook file declares (name -> type); None without a ``parameters`` cell.

    Read by :func:`nbplugins.papermill.parameters.declared`, as the engine reads them.
    """
    import nbformat

    from nbplugins.papermill import parameters

    nb = nbformat.read(str(path), as_version=4)
    return parameters.declared(nb) if parameters.has_parameters_cell(nb) else None


def issues(pipeline: Pipeline, *, check_files: bool = True) -> list[str]:
    """Every problem that would stop a run, each naming its node; empty when the pipeline is runnable."""
    found: list[str] = []
    labels: dict[str, str] = {}
    ids = pipeline.by_id()
    for node in pipeline.nodes:
        at = f"node {node.label!r}"
        if node.label in labels:
            found.append(f"{at}: label used by two nodes (the run record and its report name nodes by label; "
                         "rename one)")
        labels[node.label] = node.id
        for parent in node.depends_on:
            if parent not in ids:
                found.append(f"{at}: link to unknown node {parent!r}")
        image = pipeline.image_of(node)
        if not image:
            found.append(f"{at}: no runtime_image (set one on the node or as the pipeline default; "
                         "Elyra needs it even for local runs)")
        elif not IMAGE.search(image):
            found.append(f"{at}: runtime_image {image!r} is not of the form [registry/]owner/image:tag")
        for name in pipeline.env_of(node):
            if not name or " " in name or "=" in name:
                found.append(f"{at}: environment variable name {name!r} is not valid")
        for name in node.pipeline_parameters:
            if name not in pipeline.parameters:
                found.append(f"{at}: uses pipeline parameter {name!r}, which the pipeline does not define")
        for name, value in node.parameters.items():
            for ref in references(value):
                if ref not in pipeline.parameters:
                    found.append(f"{at}: parameter {name!r} references undefined pipeline parameter {ref!r}")
        if not K8S_NAME.match(pipeline.secret_name):
            found.append(f"pipeline: secret name {pipeline.secret_name!r} is not a valid Kubernetes name")
        bad_paths = node.path_problems()
        found.extend(bad_paths.values())
        if not check_files:
            continue
        path = pipeline.path_of(node)
        if not path.is_file():
            found.append(f"{at}: file not found: {node.filename} (resolved to {path})")
            continue
        for dep in node.dependencies:
            if dep in bad_paths:
                continue
            pattern = str(path.parent / dep)
            if not (glob.glob(pattern) if any(c in dep for c in "*?[") else os.path.exists(pattern)):
                found.append(f"{at}: dependency {dep!r} not found next to {node.filename}")
        if node.kind == "notebook":
            try:
                known = declared(path)
            except Exception as exc:  # unreadable notebook
                found.append(f"{at}: cannot read {node.filename}: {exc}")
                continue
            if node.parameters and known is None:
                found.append(f"{at}: {node.filename} has no cell tagged 'parameters', so it takes no parameters")
            elif known is not None:
                unknown = sorted(set(node.parameters) - set(known))
                if unknown:
                    found.append(f"{at}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                                 f"(the parameters cell of {node.filename} declares: {', '.join(sorted(known)) or 'none'})")
        elif node.parameters:
            found.append(f"{at}: papermill parameters apply to notebooks only, not {node.filename} "
                         "(pass values to scripts through env)")
    cycle = pipeline.find_cycle()
    if cycle:
        found.append(f"dependency cycle {' -> '.join(repr(c) for c in cycle)}")
    if not pipeline.nodes:
        found.append("the pipeline has no nodes")
    return found


def validate(pipeline: Pipeline, *, check_files: bool = True) -> Pipeline:
    """Raise ValidationError (one line, the first problem, a count of the rest) unless runnable."""
    problems = issues(pipeline, check_files=check_files)
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:3])})" if len(problems) > 1 else ""
        raise ValidationError(f"{pipeline.where}: {problems[0]}{more}")
    return pipeline


def load(path: str | os.PathLike[str], *, check_files: bool = True) -> Pipeline:
    """Read and fully validate a ``.pipeline`` file."""
    return validate(read(path), check_files=check_files)
