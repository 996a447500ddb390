"""Pipeline and Node: the in-memory form of an Elyra pipeline that nbplugins builds, checks and runs.

A node runs one file (a notebook, a Python or an R script) in a container image, with
papermill parameters, environment variables, file dependencies, declared outputs and the
nodes it waits for. File paths are stored as Elyra stores them: relative to the directory
of the ``.pipeline`` file (``Pipeline.base_dir``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbplugins import paths
from nbplugins.errors import ValidationError
from nbplugins.pipelines import graph

#: Elyra's generic operations by file kind, and the kind each file suffix selects.
OPS = {"notebook": "execute-notebook-node", "python": "execute-python-node", "r": "execute-r-node"}
KINDS = {op: kind for kind, op in OPS.items()}
SUFFIXES = {".ipynb": "notebook", ".py": "python", ".r": "r"}

#: ``${name}`` as a whole parameter value: the value of pipeline parameter ``name``.
PARAM_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def references(value: Any) -> list[str]:
    """The pipeline parameters ``value`` refers to: a whole ``${name}`` string, or such strings
    anywhere inside its lists and dicts (``{"InputTable": "${table}"}``)."""
    if isinstance(value, str):
        ref = PARAM_REF.match(value)
        return [ref.group(1)] if ref else []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [name for item in items for name in references(item)]


def substitute(value: Any, values: Mapping[str, Any]) -> Any:
    """``value`` with every ``${name}`` string (whole, or inside lists and dicts) replaced by ``values[name]``."""
    if isinstance(value, str):
        ref = PARAM_REF.match(value)
        return values[ref.group(1)] if ref else value
    if isinstance(value, dict):
        return {k: substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    return value

_NAMESPACE = uuid.UUID("5d9c7c39-5a53-4c4c-9f0e-6e6270697065")


def kind_of(filename: str) -> str:
    """The node kind (notebook, python, r) a file name implies; ValidationError otherwise."""
    kind = SUFFIXES.get(Path(filename).suffix.lower())
    if kind is None:
        raise ValidationError(f"{filename}: Elyra runs .ipynb, .py and .r files only")
    return kind


def stable_id(*parts: str) -> str:
    """A UUID derived from names, so rebuilding a spec gives the same file (reviewable diffs)."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


@dataclass
class Parameter:
    """A pipeline parameter: a named default that ``--param name=value`` overrides for one run."""

    name: str
    default: Any = None
    description: str = ""
    required: bool = False

    @property
    def type_name(self) -> str:
        """The Kubeflow type Elyra records for this default (String, Integer, Float, Bool)."""
        if isinstance(self.default, bool):
            return "Bool"
        if isinstance(self.default, int):
            return "Integer"
        if isinstance(self.default, float):
            return "Float"
        return "String"


@dataclass
class Node:
    """One step: a file to run, how to run it, and what it needs and produces."""

    id: str
    label: str
    filename: str
    runtime_image: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    pipeline_parameters: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    include_subdirectories: bool = False
    outputs: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    kubernetes_secrets: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # other component_parameters, kept verbatim
    position: tuple[float, float] | None = None
    description: str = ""
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = kind_of(self.filename)

    @property
    def op(self) -> str:
        """Elyra's operation name for this node's kind."""
        return OPS[self.kind]

    @property
    def timeout(self) -> float | None:
        """Seconds the node may run locally (``timeout`` in the spec), None for no limit."""
        value = self.extra.get("timeout")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None

    def path_problems(self) -> dict[str, str]:
        """Dependencies and outputs a run refuses (absolute, climbing with ``..``), by value.

        Each message names the node and the field; ``validate`` reports them and the runner
        never sees them (it validates first), so both refuse exactly the same paths.
        """
        problems: dict[str, str] = {}
        for name, values in (("dependencies", self.dependencies), ("outputs", self.outputs)):
            for value in values:
                try:
                    paths.check_relative(value, f"node {self.label!r}: {name} entry")
                except ValidationError as exc:
                    problems.setdefault(value, str(exc))
        return problems


@dataclass
class Pipeline:
    """A DAG of nodes plus pipeline-wide defaults and parameters."""

    name: str
    nodes: list[Node] = field(default_factory=list)
    parameters: dict[str, Parameter] = field(default_factory=dict)
    runtime_image: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    kubernetes_secrets: list[dict[str, str]] = field(default_factory=list)
    secret_name: str = "nbplugins-secrets"  # Kubernetes secret that @env:/@file:/@oidc env values map to
    description: str = ""
    defaults_extra: dict[str, Any] = field(default_factory=dict)  # other pipeline_defaults, verbatim
    base_dir: Path = field(default_factory=Path.cwd)
    source: str | None = None  # the file it was read from, for messages

    # -- lookups ---------------------------------------------------------------------------

    def node(self, key: str) -> Node:
        """The node with this id or label; ValidationError naming the known labels otherwise."""
        for node in self.nodes:
            if key in (node.id, node.label):
                return node
        known = ", ".join(n.label for n in self.nodes) or "none"
        raise ValidationError(f"{self.where}: unknown node {key!r} (nodes: {known})")

    @property
    def where(self) -> str:
        return self.source or self.name

    def by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    def folders(self, previous: dict[str, str] | None = None) -> dict[str, str]:
        """Each node's folder name by label (run and export folders): safe and unique, never the label itself."""
        return paths.folder_names([n.label for n in self.nodes], previous)

    def path_of(self, node: Node) -> Path:
        """The absolute path of a node's file."""
        return (self.base_dir / node.filename).resolve()

    def image_of(self, node: Node) -> str | None:
        return node.runtime_image or self.runtime_image

    def env_of(self, node: Node) -> dict[str, str]:
        """Pipeline env overlaid with the node's own (node wins), as Elyra merges them."""
        return {**self.env, **node.env}

    def children(self) -> dict[str, list[str]]:
        kids: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for node in self.nodes:
            for parent in node.depends_on:
                if parent in kids:
                    kids[parent].append(node.id)
        return kids

    # -- graph -----------------------------------------------------------------------------

    def parents(self) -> dict[str, list[str]]:
        """Each node id's parents (ids), in file order: the graph :mod:`.graph` works on."""
        return {n.id: list(n.depends_on) for n in self.nodes}

    def find_cycle(self) -> list[str] | None:
        """Labels along one dependency cycle, or None if the graph is acyclic."""
        found = graph.cycle(self.parents())
        if found is None:
            return None
        ids = self.by_id()
        return [ids[i].label for i in found]

    def order(self) -> list[Node]:
        """Nodes in a topological order (parents first), stable with respect to file order."""
        loop = self.find_cycle()
        if loop:
            raise ValidationError(f"{self.where}: dependency cycle {' -> '.join(loop)}")
        ids = self.by_id()
        return [ids[i] for i in graph.order(self.parents())]

    def depths(self) -> dict[str, int]:
        """Longest distance from a root, per node id (the layer it is drawn in)."""
        return graph.depths(self.parents())

    def ancestors(self, node_id: str) -> list[str]:
        """Every node the given node transitively depends on (ids, topological order)."""
        ids = self.by_id()
        seen: set[str] = set()
        todo = list(ids[node_id].depends_on)
        while todo:
            nid = todo.pop()
            if nid in seen or nid not in ids:
                continue
            seen.add(nid)
            todo.extend(ids[nid].depends_on)
        return [n.id for n in self.order() if n.id in seen]

    def descendants(self, node_id: str) -> set[str]:
        kids = self.children()
        seen: set[str] = set()
        todo = list(kids.get(node_id, []))
        while todo:
            nid = todo.pop()
            if nid not in seen:
                seen.add(nid)
                todo.extend(kids.get(nid, []))
        return seen

    def layout(self, dx: float = 250.0, dy: float = 110.0, x0: float = 60.0, y0: float = 60.0) -> None:
        """Place nodes in columns by topological depth, each column centred on the tallest one."""
        depth = self.depths()
        columns: dict[int, list[Node]] = {}
        for node in self.order():
            columns.setdefault(depth[node.id], []).append(node)
        tallest = max((len(c) for c in columns.values()), default=1)
        for d, column in columns.items():
            offset = (tallest - len(column)) * dy / 2
            for i, node in enumerate(column):
                node.position = (round(x0 + d * dx), round(y0 + offset + i * dy))
