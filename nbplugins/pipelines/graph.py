"""Dependency graphs of pipeline nodes: cycles, order, layers and chain heights, in one place.

Every function takes a mapping of node -> its parents (ids in the model and the runner,
labels in a run record), so the model, the scheduler and the report share one implementation.
Cycle detection is the standard library's :mod:`graphlib`; the order is depth-first in the
mapping's order, so a pipeline's nodes keep the order of its file wherever that is free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from graphlib import CycleError, TopologicalSorter

Parents = Mapping[str, Sequence[str]]


def _known(parents: Parents) -> dict[str, list[str]]:
    """The graph with edges to unknown nodes dropped (a broken edge is reported elsewhere)."""
    return {node: [p for p in ps if p in parents] for node, ps in parents.items()}


def cycle(parents: Parents) -> list[str] | None:
    """One dependency cycle, parents first and closed (``[a, b, a]``: b needs a, a needs b); None if none."""
    try:
        TopologicalSorter(_known(parents)).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return None


def order(parents: Parents) -> list[str]:
    """Nodes parents first, depth-first in the mapping's order; the graph must have no cycle."""
    graph = _known(parents)
    done: set[str] = set()
    out: list[str] = []

    def visit(node: str) -> None:
        if node in done:
            return
        done.add(node)
        for parent in graph[node]:
            visit(parent)
        out.append(node)

    for node in graph:
        visit(node)
    return out


def depths(parents: Parents) -> dict[str, int]:
    """Longest distance from a root, per node (the layer a drawing puts it in)."""
    graph = _known(parents)
    depth: dict[str, int] = {}
    for node in order(graph):
        depth[node] = 1 + max((depth.get(p, -1) for p in graph[node]), default=-1)
    return depth


def heights(parents: Parents) -> dict[str, int]:
    """For each node, the number of nodes on the longest chain it starts (itself included).

    The scheduler starts the node with the most work behind it first (list scheduling by
    level), which keeps the critical path moving.
    """
    graph = _known(parents)
    children: dict[str, list[str]] = {node: [] for node in graph}
    for node, ps in graph.items():
        for parent in ps:
            children[parent].append(node)
    height: dict[str, int] = {}
    for node in reversed(order(graph)):
        height[node] = 1 + max((height[c] for c in children[node]), default=0)
    return height
