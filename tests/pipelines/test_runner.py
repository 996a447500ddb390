"""The local runner: parallel ready set, isolated node folders, parameters and env, failures,
resume, run record and report; and the same files run with the real ``elyra-pipeline run``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nbformat

from nbplugins.pipelines import elyra, runner, spec
from tests.pipelines.conftest import elyra_pipeline, make_notebook, write_spec

# Two notebooks that each wait for the other's flag file: they finish only if they run at once.
RENDEZVOUS = """
import pathlib, time
pathlib.Path(shared, me).write_text("here")
deadline = time.time() + 60
while not pathlib.Path(shared, other).exists():
    assert time.time() < deadline, f"{other} never started: nodes ran one after the other"
    time.sleep(0.05)
pathlib.Path("done.txt").write_text(me)
"""


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _diamond(ws: Path, fail_marker: Path) -> Path:
    """prepare -> (left, right) -> join, plus a lone node; right fails while ``fail_marker`` exists."""
    nb = ws / "nb"
    shared = ws / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    make_notebook(nb / "prepare.ipynb", 'greeting = "hello"\nscale = 1',
                  'import os\nopen("data.txt", "w").write(f"{greeting} {scale} {os.environ[\'SCALE_ENV\']}")\n'
                  'open("undeclared.txt", "w").write("not an output")')
    make_notebook(nb / "left.ipynb", f'shared = "{shared}"\nme = "left"\nother = "right"', RENDEZVOUS +
                  'open("left.txt", "w").write(open("data.txt").read().upper())')
    make_notebook(nb / "right.ipynb", f'shared = "{shared}"\nme = "right"\nother = "left"\nmarker = ""', RENDEZVOUS +
                  'import os\nassert not os.path.exists(marker), "asked to fail"\n'
                  'open("right.txt", "w").write(open("data.txt").read()[::-1])')
    make_notebook(nb / "join.ipynb", "", 'open("joined.txt", "w").write(open("left.txt").read() + "|" + open("right.txt").read())')
    (nb / "lone.py").write_text('import os\nopen("lone.txt", "w").write(os.environ["LONE"] + os.environ["SECRETISH"])\n')
    write_spec(nb / "diamond.yaml", {
        "name": "diamond", "runtime_image": "quay.io/jupyter/minimal-notebook:2025-03-14",
        "parameters": {"scale": {"default": 2}},
        "env": {"SCALE_ENV": "from-env"},
        "nodes": {
            "prepare": {"notebook": "prepare.ipynb", "parameters": {"scale": "${scale}"}, "outputs": ["data.txt"]},
            "left": {"notebook": "left.ipynb", "after": ["prepare"], "outputs": ["left.txt"]},
            "right": {"notebook": "right.ipynb", "after": ["prepare"], "outputs": ["right.txt"],
                      "parameters": {"marker": str(fail_marker)}},
            "join": {"notebook": "join.ipynb", "after": ["left", "right"], "outputs": ["joined.txt"]},
            "lone": {"script": "lone.py", "env": {"LONE": "solo-", "SECRETISH": "@env:NBP_TEST_SECRET"},
                     "outputs": ["lone.txt"]},
        }})
    return spec.build(nb / "diamond.yaml")


def test_parallel_run_isolated_folders_params_env_and_report(workspace, monkeypatch, canary):
    monkeypatch.setenv("NBP_TEST_SECRET", canary)
    path = _diamond(workspace, workspace / "no-such-marker")
    before = _digest(workspace / "nb")
    job = runner.PipelineRun(elyra.load(path), workspace / "run", parameters={"scale": "7"}, jobs=2)
    events = list(job.events())
    assert job.record["status"] == "succeeded", job.summary()
    kinds = [(e.kind, e.subject) for e in events]
    for label in ("prepare", "left", "right", "join", "lone"):
        assert kinds.index(("started", label)) < kinds.index(("finished", label))
    assert kinds.index(("finished", "prepare")) < kinds.index(("started", "left"))
    assert kinds.index(("finished", "right")) < kinds.index(("started", "join"))
    nodes = workspace / "run" / "nodes"
    # --param overrides the default, typed like it (int), through ${scale}; env reaches the kernel
    assert (nodes / "prepare" / "data.txt").read_text() == "hello 7 from-env"
    assert (nodes / "join" / "joined.txt").read_text() == "HELLO 7 FROM-ENV|vne-morf 7 olleh"
    # only declared outputs flow downstream (as on Kubeflow), undeclared files stay put
    assert (nodes / "left" / "data.txt").exists() and not (nodes / "left" / "undeclared.txt").exists()
    assert (nodes / "join" / "data.txt").exists()  # transitive: outputs of every ancestor
    # the script node got its secret through env, and no output holds it
    assert (nodes / "lone" / "lone.txt").read_text() == "solo-" + canary
    for file in (workspace / "run").rglob("*"):
        if file.is_file() and file.name != "lone.txt":
            assert canary not in file.read_text(errors="replace"), file
    # sources untouched; executed copies in the run folder
    assert _digest(workspace / "nb") == before
    executed = nbformat.read(str(nodes / "prepare" / "prepare.ipynb"), as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    record = json.loads((workspace / "run" / "run.json").read_text())
    assert record["parameters"] == {"scale": 7}
    assert {k: v["status"] for k, v in record["nodes"].items()} == dict.fromkeys(
        ("prepare", "left", "right", "join", "lone"), "succeeded")
    assert record["nodes"]["join"]["outputs"] == [{"path": "nodes/join/joined.txt", "bytes": len("HELLO 7 FROM-ENV|vne-morf 7 olleh")}]
    assert all(v["end"] >= v["start"] for v in record["nodes"].values())
    html = (workspace / "run" / "report.html").read_text()
    assert html.count('class="bar"') == 5 and html.count('class="node"') == 5 and html.count('class="edge"') == 4


def test_failure_skips_dependents_only_and_resume_reruns_failed_and_skipped(workspace, run_cli):
    marker = workspace / "fail-now"
    marker.write_text("x")
    path = _diamond(workspace, marker)
    run_dir = workspace / "run"
    code, out, err = run_cli("pipeline", "run", str(path), "--run-dir", str(run_dir), "-j", "2", "-q")
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("nbplugins: error: diamond: ") and "failed: right" in last and "skipped: join" in last
    assert "asked to fail" in last and "--resume" in last
    record = json.loads((run_dir / "run.json").read_text())
    status = {k: v["status"] for k, v in record["nodes"].items()}
    assert status == {"prepare": "succeeded", "left": "succeeded", "right": "failed", "join": "skipped",
                      "lone": "failed"}  # lone fails too: NBP_TEST_SECRET is not set in this test
    assert "NBP_TEST_SECRET" in record["nodes"]["lone"]["error"]
    assert "because 'right' failed" in record["nodes"]["join"]["error"]
    kept = (run_dir / "nodes" / "left" / "left.ipynb").stat().st_mtime_ns

    marker.unlink()
    import os

    os.environ["NBP_TEST_SECRET"] = "value-for-resume"
    try:
        job = runner.PipelineRun(elyra.load(path), run_dir, jobs=2, resume=True)
        events = list(job.events())
    finally:
        del os.environ["NBP_TEST_SECRET"]
    ran = {e.subject for e in events if e.kind == "started"}
    assert ran == {"right", "join", "lone"}
    assert {e.subject for e in events if e.kind == "reused"} == {"prepare", "left"}
    assert job.record["status"] == "succeeded" and job.record["attempt"] == 2
    assert (run_dir / "nodes" / "left" / "left.ipynb").stat().st_mtime_ns == kept
    assert (run_dir / "nodes" / "join" / "joined.txt").read_text().startswith("HELLO 2")


def test_resume_with_other_parameters_is_refused(workspace, run_cli):
    path = _diamond(workspace, workspace / "absent")
    run_dir = workspace / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"pipeline": "diamond", "parameters": {"scale": 2}, "nodes": dict.fromkeys(
        ("prepare", "left", "right", "join", "lone"), {"status": "failed"})}))
    code, _, err = run_cli("pipeline", "run", str(path), "--run-dir", str(run_dir), "--resume", "-p", "scale=3", "-q")
    assert code == 1 and "different parameters (scale: 2 -> 3)" in err
    code, _, err = run_cli("pipeline", "run", str(path), "--run-dir", str(run_dir), "-q")
    assert code == 1 and "already holds a run" in err
    code, _, err = run_cli("pipeline", "run", str(path), "--run-dir", str(workspace / "r2"), "-p", "nope=1", "-q")
    assert code == 1 and "unknown pipeline parameter 'nope'" in err and not (workspace / "r2").exists()


def test_the_same_file_runs_with_elyra_pipeline_run(workspace):
    nb = workspace / "el"
    make_notebook(nb / "one.ipynb", 'out = "one.txt"', 'import os\nopen(out, "w").write(os.environ["GREETING"])')
    make_notebook(nb / "two.ipynb", "", 'open("two.txt", "w").write(open("one.txt").read() * 2)')
    write_spec(nb / "el.yaml", {"name": "el", "runtime_image": "owner/image:tag", "env": {"GREETING": "hi"},
                                "nodes": {"one": {"notebook": "one.ipynb", "outputs": ["one.txt"]},
                                          "two": {"notebook": "two.ipynb", "after": ["one"]}}})
    path = spec.build(nb / "el.yaml")
    result = elyra_pipeline("run", str(path.relative_to(workspace)), cwd=workspace)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (nb / "two.txt").read_text() == "hihi"


def test_ready_nodes_start_longest_chain_first(workspace):
    for name in "abcdef":
        make_notebook(workspace / f"{name}.ipynb", "x = 1", "print(x)")
    edges = {"e": [], "f": [], "a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}  # e, f first in the file
    nodes = {n: {"notebook": f"{n}.ipynb", **({"after": p} if p else {})} for n, p in edges.items()}
    built = spec.build(write_spec(workspace / "order.yaml", {"name": "order", "runtime_image": "owner/image:tag",
                                                              "nodes": nodes}))
    ranked = [n.label for n in runner.critical_path_order(elyra.load(built))]
    assert ranked[0] == "a" and set(ranked[1:3]) == {"b", "c"}  # the diamond's chain before e and f
    assert set(ranked[3:]) == {"d", "e", "f"}


def test_a_folder_declared_as_output_is_recorded_file_by_file(workspace):
    make_notebook(workspace / "maker.ipynb", "x = 1",
                  'import os\nos.makedirs("out/deep", exist_ok=True)\nopen("out/a.txt", "w").write("a")\n'
                  'open("out/deep/b.txt", "w").write("bb")')
    make_notebook(workspace / "reader.ipynb", "x = 1", 'assert open("out/deep/b.txt").read() == "bb"')
    built = spec.build(write_spec(workspace / "folders.yaml", {
        "name": "folders", "runtime_image": "owner/image:tag",
        "nodes": {"maker": {"notebook": "maker.ipynb", "outputs": ["out"]},
                  "reader": {"notebook": "reader.ipynb", "after": ["maker"]}}}))
    job = runner.PipelineRun(elyra.load(built), workspace / "run", jobs=1)
    for _ in job.events():
        pass
    record = json.loads((workspace / "run" / "run.json").read_text())
    assert record["nodes"]["maker"]["outputs"] == [
        {"path": "nodes/maker/out/a.txt", "bytes": 1}, {"path": "nodes/maker/out/deep/b.txt", "bytes": 2}]
    assert {n["status"] for n in record["nodes"].values()} == {"succeeded"}
