"""The .pipeline files we write are what Elyra 4.x expects, round-trip, and bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbplugins.errors import ValidationError
from nbplugins.pipelines import elyra, spec
from tests.pipelines.conftest import ROOT, elyra_pipeline, make_notebook, write_spec


def test_committed_flagship_is_generated_from_its_spec(tmp_path):
    out = spec.build(ROOT / "pipelines" / "flagship.yaml", tmp_path / "flagship.pipeline")
    rebuilt = json.loads(out.read_text())
    committed = json.loads((ROOT / "pipelines" / "flagship.pipeline").read_text())
    # filenames are relative to the output folder: rebuild beside the committed file to compare
    same_place = spec.from_spec(spec.load_spec(ROOT / "pipelines" / "flagship.yaml"), ROOT / "pipelines",
                                ROOT / "pipelines")
    assert elyra.to_dict(same_place) == committed
    assert len(rebuilt["pipelines"][0]["nodes"]) == 4


def test_written_file_has_the_fields_elyra_4_needs(workspace):
    doc = json.loads(spec.build(workspace / "pipelines" / "flagship.yaml").read_text())
    assert doc["version"] == "3.0" and isinstance(doc["version"], str)
    primary = doc["pipelines"][0]
    assert primary["app_data"]["version"] == 8
    assert elyra.schema_errors(doc) == []
    labels = {n["id"]: n["app_data"]["ui_data"]["label"] for n in primary["nodes"]}
    parents = {}
    for node in primary["nodes"]:
        params = node["app_data"]["component_parameters"]
        assert "/" in params["runtime_image"] and ":" in params["runtime_image"]
        assert all(isinstance(e, dict) and set(e) == {"env_var", "value"} for e in params["env_vars"])
        assert len(node["inputs"]) == 1
        parents[labels[node["id"]]] = sorted(labels[link["node_id_ref"]] for link in node["inputs"][0].get("links", []))
        assert all(link["port_id_ref"] == "outPort" for link in node["inputs"][0].get("links", []))
    assert parents == {"prepare": [], "summary": ["prepare"], "correlations": ["prepare"],
                       "report": ["correlations", "summary"]}
    pos = {labels[n["id"]]: (n["app_data"]["ui_data"]["x_pos"], n["app_data"]["ui_data"]["y_pos"])
           for n in primary["nodes"]}
    # layered layout: one column per depth, the two parallel analyses one above the other
    assert pos["prepare"][0] < pos["summary"][0] == pos["correlations"][0] < pos["report"][0]
    assert pos["summary"][1] != pos["correlations"][1]
    assert min(pos["summary"][1], pos["correlations"][1]) < pos["prepare"][1] < max(pos["summary"][1], pos["correlations"][1])


def test_read_then_write_is_byte_identical(workspace):
    path = spec.build(workspace / "pipelines" / "flagship.yaml")
    assert elyra.dumps(elyra.read(path)) == path.read_text()


def test_elyra_parser_sees_our_nodes_edges_env_and_outputs(workspace):
    from elyra.cli.pipeline_app import _preprocess_pipeline
    from elyra.pipeline.parser import PipelineParser

    tpl = workspace / "templates"
    write_spec(workspace / "pipelines" / "env.yaml", {
        "name": "envcheck", "runtime_image": "quay.io/jupyter/minimal-notebook:2025-03-14",
        "env": {"SHARED": "1"},
        "nodes": {
            "first": {"notebook": "../templates/prepare_table.ipynb", "env": {"TOKEN": "@env:MY_TOKEN", "MODE": "fast"},
                      "outputs": ["prepared.csv"], "dependencies": ["data/measurements.csv"]},
            "second": {"script": "../templates/step.py", "after": ["first"]},
        }})
    (tpl / "step.py").write_text("print('hi')\n")
    path = spec.build(workspace / "pipelines" / "env.yaml")
    doc = json.loads(path.read_text())
    ops = PipelineParser().parse(_preprocess_pipeline(str(path), runtime="local")).operations
    by_name = {op.name: op for op in ops.values()}
    assert set(by_name) == {"first", "second"}
    first, second = by_name["first"], by_name["second"]
    assert second.parent_operation_ids == [first.id]
    assert first.classifier == "execute-notebook-node" and second.classifier == "execute-python-node"
    # Elyra prefers the Kubernetes secret for TOKEN and drops the reference string from the env
    assert first.env_vars.to_dict() == {"SHARED": "1", "MODE": "fast"}
    k8s = first.elyra_props["kubernetes_secrets"]
    assert [(s.env_var, s.name, s.key) for s in k8s] == [("TOKEN", "nbplugins-secrets", "MY_TOKEN")]
    assert first.outputs == ["prepared.csv"] and first.dependencies == ["data/measurements.csv"]
    secrets = doc["pipelines"][0]["nodes"][0]["app_data"]["component_parameters"]["kubernetes_secrets"]
    assert secrets == [{"env_var": "TOKEN", "name": "nbplugins-secrets", "key": "MY_TOKEN"}]
    assert first.runtime_image == "quay.io/jupyter/minimal-notebook:2025-03-14"


def test_elyra_pipeline_validate_accepts_our_files(workspace):
    spec.build(workspace / "pipelines" / "flagship.yaml")
    result = elyra_pipeline("validate", "pipelines/flagship.pipeline", cwd=workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation SUCCEEDED" in result.stdout


def test_env_strings_are_refused_because_elyra_drops_them(workspace):
    path = spec.build(workspace / "pipelines" / "flagship.yaml")
    doc = json.loads(path.read_text())
    doc["pipelines"][0]["nodes"][1]["app_data"]["component_parameters"]["env_vars"] = ["FOO=bar"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValidationError, match=r"node 'summary'.*'FOO'.*NAME=value"):
        elyra.read(path)


# ----------------------------------------------------------------------------- bad input via the CLI


def _tiny(workspace: Path) -> Path:
    make_notebook(workspace / "nb" / "a.ipynb", "x = 1", "print(x)")
    make_notebook(workspace / "nb" / "b.ipynb", "y = 2", "print(y)")
    write_spec(workspace / "nb" / "tiny.yaml", {
        "name": "tiny", "runtime_image": "owner/image:tag",
        "nodes": {"alpha": {"notebook": "a.ipynb"}, "beta": {"notebook": "b.ipynb", "after": ["alpha"]}}})
    return spec.build(workspace / "nb" / "tiny.yaml")


def _break(path: Path, how: str) -> None:
    doc = json.loads(path.read_text())
    nodes = doc["pipelines"][0]["nodes"]
    alpha, beta = nodes
    if how == "version":
        doc["version"] = 3.0
    elif how == "app-version":
        doc["pipelines"][0]["app_data"]["version"] = 7
    elif how == "cycle":
        alpha["inputs"][0]["links"] = [{"id": "l1", "node_id_ref": beta["id"], "port_id_ref": "outPort"}]
    elif how == "missing":
        beta["app_data"]["component_parameters"]["filename"] = "gone.ipynb"
    elif how == "unknown-node":
        beta["inputs"][0]["links"][0]["node_id_ref"] = "no-such-node"
    elif how == "unknown-param":
        beta["app_data"]["nbplugins"] = {"parameters": {"y": 3, "nonsense": 1}}
    elif how == "no-image":
        beta["app_data"]["component_parameters"]["runtime_image"] = ""
        del doc["pipelines"][0]["app_data"]["properties"]["pipeline_defaults"]["runtime_image"]
        alpha["app_data"]["component_parameters"]["runtime_image"] = "owner/image:tag"
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(("how", "expected"), [
    ("version", r'wrong version field: top-level "version" must be the string "3\.0", found 3\.0'),
    ("app-version", r"wrong version field: pipelines\[0\]\.app_data\.version must be 8, found 7"),
    ("cycle", r"dependency cycle .*'alpha'.*'beta'"),
    ("missing", r"node 'beta': file not found: gone\.ipynb"),
    ("unknown-node", r"node 'beta'.*link to unknown node 'no-such-node'"),
    ("unknown-param", r"node 'beta': unknown parameter nonsense \(the parameters cell of b\.ipynb declares: y\)"),
    ("no-image", r"node 'beta': no runtime_image"),
])
def test_bad_pipelines_fail_with_one_line_naming_the_node_and_run_nothing(workspace, run_cli, how, expected):
    path = _tiny(workspace)
    _break(path, how)
    for command in (["pipeline", "validate", str(path)],
                    ["pipeline", "run", str(path), "--run-dir", str(workspace / "run"), "-q"]):
        code, out, err = run_cli(*command)
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nbplugins: error: "), err
        import re

        assert re.search(expected, lines[0]), lines[0]
    assert not (workspace / "run").exists()  # nothing executed, no run folder
    assert not list((workspace / "nb").glob("*.out*"))


def test_spec_errors_name_the_node(workspace, run_cli):
    make_notebook(workspace / "nb" / "a.ipynb", "x = 1", "print(x)")
    write_spec(workspace / "nb" / "bad.yaml", {"name": "bad", "runtime_image": "o/i:t",
                                              "nodes": {"a": {"notebook": "a.ipynb", "after": ["ghost"]}}})
    code, _, err = run_cli("pipeline", "build", str(workspace / "nb" / "bad.yaml"))
    assert code == 1 and "node 'a': 'after' names unknown node 'ghost'" in err
    assert not (workspace / "nb" / "bad.pipeline").exists()
