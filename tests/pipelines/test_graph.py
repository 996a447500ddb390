"""The one dependency-graph module: cycles named in order, file order kept, layers, chain heights."""

from __future__ import annotations

from nbplugins.pipelines import graph

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "solo": []}


def test_order_puts_parents_first_and_keeps_the_file_order_where_free():
    assert graph.order({"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": [], "solo": []}) == ["a", "b", "c", "d", "solo"]
    assert graph.order(DIAMOND) == ["a", "b", "c", "d", "solo"]


def test_a_cycle_is_named_parents_first_and_closed():
    loop = graph.cycle({"a": ["c"], "b": ["a"], "c": ["b"], "x": []})
    assert loop is not None and loop[0] == loop[-1] and set(loop) == {"a", "b", "c"}
    for parent, child in zip(loop, loop[1:], strict=False):
        assert parent in {"a": ["c"], "b": ["a"], "c": ["b"]}[child]
    assert graph.cycle(DIAMOND) is None


def test_depths_and_heights_of_a_diamond():
    assert graph.depths(DIAMOND) == {"a": 0, "b": 1, "c": 1, "d": 2, "solo": 0}
    assert graph.heights(DIAMOND) == {"a": 3, "b": 2, "c": 2, "d": 1, "solo": 1}


def test_edges_to_unknown_nodes_are_ignored():
    assert graph.order({"a": ["ghost"], "b": ["a"]}) == ["a", "b"]
    assert graph.depths({"a": ["ghost"], "b": ["a"]}) == {"a": 0, "b": 1}
