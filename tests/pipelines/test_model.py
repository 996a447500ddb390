"""The in-memory pipeline: node kinds and ids, lookups, defaults merged as Elyra merges them,
the graph walks, and the paths a run refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbplugins.errors import ValidationError
from nbplugins.pipelines import model
from nbplugins.pipelines.model import Node, Parameter, Pipeline


def diamond(tmp_path: Path) -> Pipeline:
    """prepare -> (left, right) -> combine, and a lone script; ids are the labels upper-cased."""
    nodes = [Node(id="A", label="prepare", filename="prepare.ipynb"),
             Node(id="B", label="left", filename="left.ipynb", depends_on=["A"]),
             Node(id="C", label="right", filename="scripts/right.py", depends_on=["A"], runtime_image="me/py:1"),
             Node(id="D", label="combine", filename="combine.r", depends_on=["B", "C"], env={"MODE": "node"}),
             Node(id="E", label="solo", filename="solo.ipynb")]
    return Pipeline(name="p", nodes=nodes, runtime_image="me/base:2", env={"MODE": "pipeline", "LANG": "C"},
                    base_dir=tmp_path, source=str(tmp_path / "p.pipeline"))


def test_a_files_suffix_sets_the_node_kind_and_elyras_op():
    assert [model.kind_of(f) for f in ("a.ipynb", "b.PY", "c.r", "d.R")] == ["notebook", "python", "r", "r"]
    with pytest.raises(ValidationError, match=r"run.sh: Elyra runs .ipynb, .py and .r files only"):
        model.kind_of("run.sh")
    node = Node(id="n", label="n", filename="x/step.py")
    assert node.kind == "python" and node.op == model.OPS["python"] == "execute-python-node"
    assert model.KINDS[node.op] == "python"


def test_ids_derived_from_names_are_stable_uuids():
    assert model.stable_id("p", "node", "a") == model.stable_id("p", "node", "a") != model.stable_id("p", "node", "b")
    assert len(model.stable_id("p")) == 36


def test_parameter_types_are_the_kubeflow_names_of_their_defaults():
    assert [Parameter("x", d).type_name for d in (True, 3, 0.5, "s", None)] == \
        ["Bool", "Integer", "Float", "String", "String"]
    assert model.PARAM_REF.match("${rows}").group(1) == "rows"
    assert model.PARAM_REF.match("x ${rows}") is None and model.PARAM_REF.match("${1x}") is None


def test_a_node_timeout_is_a_positive_number_of_seconds_or_none():
    def timeout(value: object) -> float | None:
        return Node(id="n", label="n", filename="a.ipynb", extra={"timeout": value}).timeout

    assert timeout(30) == 30.0 and timeout(1.5) == 1.5
    assert timeout(0) is timeout(-1) is timeout(True) is timeout("30") is None
    assert Node(id="n", label="n", filename="a.ipynb").timeout is None


def test_dependencies_and_outputs_that_leave_the_node_folder_are_named():
    node = Node(id="n", label="step", filename="a.ipynb", dependencies=["data/*.csv", "../secret"],
                outputs=["out.csv", "/etc/passwd"])
    problems = node.path_problems()
    assert set(problems) == {"../secret", "/etc/passwd"}
    assert "node 'step': dependencies entry" in problems["../secret"]
    assert "node 'step': outputs entry" in problems["/etc/passwd"]


def test_lookups_defaults_and_paths(tmp_path):
    p = diamond(tmp_path)
    assert p.node("left") is p.node("B")
    with pytest.raises(ValidationError, match=r"unknown node 'nope' \(nodes: prepare, left, right, combine, solo\)"):
        p.node("nope")
    assert p.where == str(tmp_path / "p.pipeline") and Pipeline(name="q").where == "q"
    assert set(p.by_id()) == {"A", "B", "C", "D", "E"}
    assert p.path_of(p.node("C")) == tmp_path / "scripts" / "right.py"
    assert p.image_of(p.node("C")) == "me/py:1" and p.image_of(p.node("A")) == "me/base:2"
    assert p.env_of(p.node("D")) == {"MODE": "node", "LANG": "C"}  # the node wins
    folders = p.folders()
    assert set(folders) == {"prepare", "left", "right", "combine", "solo"} and len(set(folders.values())) == 5


def test_graph_walks(tmp_path):
    p = diamond(tmp_path)
    assert [n.label for n in p.order()] == ["prepare", "left", "right", "combine", "solo"]
    assert p.children() == {"A": ["B", "C"], "B": ["D"], "C": ["D"], "D": [], "E": []}
    assert p.parents()["D"] == ["B", "C"]
    assert p.depths() == {"A": 0, "B": 1, "C": 1, "D": 2, "E": 0}
    assert p.ancestors("D") == ["A", "B", "C"] and p.ancestors("A") == []
    assert p.descendants("A") == {"B", "C", "D"} and p.descendants("E") == set()
    assert p.find_cycle() is None


def test_a_cycle_is_named_by_labels_and_refused_when_ordering(tmp_path):
    p = diamond(tmp_path)
    p.node("A").depends_on = ["D"]
    loop = p.find_cycle()
    assert loop is not None and loop[0] == loop[-1] and {"prepare", "combine"} <= set(loop)
    with pytest.raises(ValidationError, match=r"dependency cycle"):
        p.order()


def test_layout_places_nodes_in_columns_by_depth(tmp_path):
    p = diamond(tmp_path)
    p.layout(dx=100, dy=50, x0=0, y0=0)
    x = {n.label: n.position[0] for n in p.nodes}
    assert x == {"prepare": 0, "solo": 0, "left": 100, "right": 100, "combine": 200}
    assert len({n.position for n in p.nodes}) == 5  # no two nodes on top of each other


def test_pipeline_parameters_are_found_and_filled_inside_lists_and_dicts():
    from nbplugins.pipelines.model import references, substitute

    value = {"InputTable": "${table}", "Column": "t", "more": ["${a}", {"b": "${b}"}], "text": "x ${a}"}
    assert references(value) == ["table", "a", "b"]
    assert substitute(value, {"table": "s3://b/t.csv", "a": 1, "b": [2]}) == {
        "InputTable": "s3://b/t.csv", "Column": "t", "more": [1, {"b": [2]}], "text": "x ${a}"}
