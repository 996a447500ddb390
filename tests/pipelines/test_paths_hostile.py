"""Pipelines from other people: labels are display names (never paths), dependencies and
outputs stay inside their folders, a run never empties a folder it does not own, and an
export of labels that look alike gets one folder per node."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nbplugins.pipelines import export, parameters, spec
from tests.pipelines.conftest import make_notebook, write_spec

IMAGE = "quay.io/jupyter/minimal-notebook:2025-03-14"
HOSTILE = ["..", "/abs", "a/../..", "../..", "x/../../..", "a b", "a_b", "A_B"]


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _notebooks(folder: Path) -> None:
    make_notebook(folder / "first.ipynb", 'text = "x"', 'open("data.txt", "w").write(text)')
    make_notebook(folder / "second.ipynb", 'suffix = ""', 'open("more.txt", "w").write(open("data.txt").read() + suffix)')


def _hostile_pipeline(ws: Path) -> Path:
    """'..' writes data.txt; '/abs', 'a/../..' and '../..' read it; 'x/../../..' (the run folder's parent
    when used as a path) runs alone; 'a b', 'a_b', 'A_B' collide as folders."""
    nb = ws / "nb"
    _notebooks(nb)
    nodes = {"..": {"notebook": "first.ipynb", "parameters": {"text": "dots"}, "outputs": ["data.txt"]}}
    for label in ("/abs", "a/../..", "../.."):
        nodes[label] = {"notebook": "second.ipynb", "after": [".."], "parameters": {"suffix": f"+{label}"},
                        "outputs": ["more.txt"]}
    for label in ("x/../../..", "a b", "a_b", "A_B"):
        nodes[label] = {"notebook": "first.ipynb", "parameters": {"text": label}, "outputs": ["data.txt"]}
    return spec.build(write_spec(nb / "hostile.yaml", {"name": "hostile", "runtime_image": IMAGE, "nodes": nodes}))


def test_hostile_labels_run_in_derived_folders_and_nothing_outside_is_touched(workspace, run_cli):
    path = _hostile_pipeline(workspace)
    code, out, err = run_cli("pipeline", "validate", str(path))
    assert code == 0, err  # labels are display names: valid
    sentinel = workspace / "keep-me.txt"
    sentinel.write_text("the user's file")
    run_dir = workspace / "run"
    run_dir.mkdir()  # an empty existing folder is fine
    before = _tree(workspace / "nb")
    abs_existed = Path("/abs").exists()
    code, _, err = run_cli("pipeline", "run", str(path), "--run-dir", str(run_dir), "-j", "2", "-q")
    assert code == 0, err
    assert sentinel.read_text() == "the user's file" and _tree(workspace / "nb") == before
    assert abs_existed or not Path("/abs").exists()
    record = json.loads((run_dir / "run.json").read_text())
    assert list(record["nodes"]) == HOSTILE  # the record keeps the labels
    folders = {label: rec["folder"] for label, rec in record["nodes"].items()}
    assert len({f.casefold() for f in folders.values()}) == len(HOSTILE)
    assert folders["a_b"] == "a_b" and folders["a b"] != "a_b"
    nodes = run_dir / "nodes"
    assert sorted(p.name for p in nodes.iterdir()) == sorted(folders.values())
    for label in ("/abs", "a/../..", "../.."):
        assert (nodes / folders[label] / "more.txt").read_text() == f"dots+{label}"
    for label in ("x/../../..", "a b", "a_b", "A_B"):
        assert (nodes / folders[label] / "data.txt").read_text() == label
    for label, rec in record["nodes"].items():
        assert rec["status"] == "succeeded", (label, rec["error"])
        assert all(o["path"].startswith(f"nodes/{folders[label]}/") for o in rec["outputs"])
    assert (run_dir / "report.html").exists()


def _edited(ws: Path, field: str, value: str) -> Path:
    """A valid two-node pipeline, then ``field`` of node 'b' set to [value] in the .pipeline file."""
    nb = ws / "nb"
    _notebooks(nb)
    (ws / "secret.txt").write_text("outside the pipeline folder")
    (nb / "data.txt").write_text("inside")
    path = spec.build(write_spec(nb / "edit.yaml", {"name": "edit", "runtime_image": IMAGE, "nodes": {
        "a": {"notebook": "first.ipynb", "outputs": ["data.txt"]},
        "b": {"notebook": "second.ipynb", "after": ["a"], "outputs": ["more.txt"]}}}))
    doc = json.loads(path.read_text())
    node = next(n for n in doc["pipelines"][0]["nodes"] if n["app_data"]["ui_data"]["label"] == "b")
    node["app_data"]["component_parameters"][field] = [value]
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("dependencies", "../secret.txt", "must not climb out of its folder with '..'"),
    ("dependencies", str(Path(__file__).resolve()), "must be a relative path, not an absolute one"),
    ("outputs", "../../escaped.txt", "must not climb out of its folder with '..'"),
    ("outputs", "/tmp/escaped.txt", "must be a relative path, not an absolute one"),
])
def test_validate_and_run_refuse_climbing_and_absolute_paths_naming_node_and_field(
        workspace, run_cli, field, value, reason):
    path = _edited(workspace, field, value)
    code, _, err = run_cli("pipeline", "validate", str(path))
    assert code == 1 and f"node 'b': {field} entry {value!r}: {reason}" in err, err
    assert len(err.strip().splitlines()) == 1
    run_dir = workspace / "run"
    code, _, err2 = run_cli("pipeline", "run", str(path), "--run-dir", str(run_dir), "-q")
    assert code == 1 and f"node 'b': {field} entry {value!r}" in err2
    assert not run_dir.exists()  # refused before anything was created
    # and a spec with such a path does not build
    bad = write_spec(workspace / "nb" / "bad.yaml", {"name": "bad", "runtime_image": IMAGE, "nodes": {
        "b": {"notebook": "second.ipynb", field: [value]}}})
    code, _, err3 = run_cli("pipeline", "build", str(bad))
    assert code == 1 and f"node 'b': {field} entry {value!r}" in err3
    assert not bad.with_suffix(".pipeline").exists()


def test_run_dir_that_is_not_a_run_folder_of_this_pipeline_is_refused(workspace, run_cli):
    nb = workspace / "nb"
    _notebooks(nb)
    path = spec.build(write_spec(nb / "one.yaml", {"name": "one", "runtime_image": IMAGE, "nodes": {
        "a": {"notebook": "first.ipynb", "outputs": ["data.txt"]}}}))
    foreign = workspace / "my-results"
    (foreign / "nodes" / "a").mkdir(parents=True)
    (foreign / "report.html").write_text("<p>my own report</p>")
    (foreign / "nodes" / "a" / "thesis.tex").write_text("years of work")
    before = _tree(foreign)
    for extra in ((), ("--resume",)):
        code, _, err = run_cli("pipeline", "run", str(path), "--run-dir", str(foreign), "-q", *extra)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "choose a new --run-dir" in err
        assert _tree(foreign) == before and not (foreign / "run.json").exists()
    # a run folder of another pipeline is not resumed either
    other = workspace / "other-run"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"pipeline": "another", "parameters": {},
                                                "nodes": {"a": {"status": "failed"}}}))
    before = _tree(other)
    code, _, err = run_cli("pipeline", "run", str(path), "--run-dir", str(other), "--resume", "-q")
    assert code == 1 and "a run of pipeline 'another', not of 'one'" in err and _tree(other) == before


def test_export_of_labels_that_map_to_one_folder_stages_one_folder_per_node(workspace, tmp_path):
    nb = workspace / "nb"
    _notebooks(nb)
    (nb / "shared.csv").write_text("x\n1\n")
    path = spec.build(write_spec(nb / "alike.yaml", {"name": "alike", "runtime_image": IMAGE, "nodes": {
        "a b": {"notebook": "first.ipynb", "dependencies": ["shared.csv"], "parameters": {"text": "space"}},
        "a/b": {"notebook": "first.ipynb", "parameters": {"text": "slash"}},
        "a_b": {"notebook": "second.ipynb", "after": ["a b"]}}}))
    from nbplugins.pipelines import elyra

    pipeline = elyra.load(path)
    stage = tmp_path / "stage"
    stage.mkdir()
    staged = export.stage(pipeline, stage, "kfp", parameters.resolve_parameters(pipeline, None))
    doc = json.loads(staged.read_text())
    files = {n["app_data"]["ui_data"]["label"]: n["app_data"]["component_parameters"]["filename"]
             for n in doc["pipelines"][0]["nodes"]}
    assert len({Path(f).parent for f in files.values()}) == 3
    assert files["a_b"] == "nodes/a_b/second.ipynb"
    for label, file in files.items():
        assert (stage / file).is_file(), label
    assert (stage / Path(files["a b"]).parent / "shared.csv").is_file()


def test_export_cli_with_labels_that_map_to_one_folder_succeeds_or_says_one_line(
        workspace, moto, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-value")
    nb = workspace / "nb"
    _notebooks(nb)
    path = spec.build(write_spec(nb / "alike.yaml", {"name": "alike", "runtime_image": IMAGE, "nodes": {
        "a b": {"notebook": "first.ipynb"}, "a_b": {"notebook": "second.ipynb", "after": ["a b"]}}}))
    out = tmp_path / "alike.yaml"
    code, _, err = run_cli("pipeline", "export", str(path), "--to", "kfp", "-o", str(out), "--bucket", "pipelines")
    assert "unexpected" not in err and len(err.strip().splitlines()) <= 1, err
    assert code == 0, err
    assert out.exists()
