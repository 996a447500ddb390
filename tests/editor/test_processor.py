"""The editor's Run button (POST /elyra/pipeline/schedule) on a real Jupyter server with Elyra:
through nbplugins when enabled (parallel, notebooks untouched, run.json and report, parameters,
secrets resolved and scrubbed), through Elyra's own processor when not; bad pipelines refused
with one clear message and nothing run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.editor.conftest import editor_request, every_text
from tests.pipelines.conftest import make_notebook

pytestmark = pytest.mark.timeout(600)


def digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.ipynb"))}


def test_run_button_runs_through_nbplugins_in_parallel_and_leaves_no_secret(lab):
    before = digest(lab.root / "work") | digest(lab.root / "templates")
    answer = lab.post("elyra/pipeline/schedule", editor_request(lab, "work/pair.pipeline"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["platform"] == "LOCAL" and body["processor"] == "nbplugins"
    run_dir = Path(body["run_dir"])
    assert run_dir.parent == lab.root / "runs" and body["object_storage_path"] == f"runs/{run_dir.name}"
    assert body["run_url"] == f"/files/runs/{run_dir.name}/report.html"  # the dialog's "Run Details" link
    assert (run_dir / "report.html").is_file()
    assert lab.get(body["run_url"].lstrip("/")).status_code == 200  # the link opens in the browser

    record = json.loads((run_dir / "run.json").read_text())
    nodes = record["nodes"]
    assert record["status"] == "succeeded" and {n["status"] for n in nodes.values()} == {"succeeded"}
    left, right = nodes["left"], nodes["right"]
    assert left["start"] < right["end"] and right["start"] < left["end"], "independent nodes did not overlap"
    assert nodes["join"]["start"] >= max(left["end"], right["end"])
    # papermill parameters and the pipeline parameter (default 3) came from the saved file
    joined = (run_dir / "nodes" / "join" / "join.ipynb").read_text()
    assert "left 3" in joined and "right 1" in joined

    assert digest(lab.root / "work") | digest(lab.root / "templates") == before, "a notebook was modified"
    assert not list((lab.root / "work").glob("*.txt")), "a node wrote next to the notebooks"
    assert "token is ***" in (run_dir / "nodes" / "left" / "left.ipynb").read_text()
    assert lab.canary not in every_text(run_dir)
    assert lab.canary not in answer.text and lab.canary not in lab.log()


def test_the_repository_pipeline_of_step_templates_runs_from_the_editor(lab):
    answer = lab.post("elyra/pipeline/schedule", editor_request(lab, "pipelines/stage_analyse_publish.pipeline"))
    assert answer.status_code == 200, answer.text
    record = json.loads((Path(answer.json()["run_dir"]) / "run.json").read_text())
    assert [n["status"] for n in record["nodes"].values()] == ["succeeded"] * 5
    assert record["parameters"] == {"min_humidity": 30.0}


def test_a_failed_node_is_named_in_the_dialog_and_its_dependents_are_skipped(lab):
    make_notebook(lab.root / "bad" / "boom.ipynb", "x = 1", "raise ValueError('the input table is empty')")
    make_notebook(lab.root / "bad" / "fine.ipynb", "x = 1", "print('fine')")
    make_notebook(lab.root / "bad" / "after.ipynb", "x = 1", "print('after')")
    from nbplugins.pipelines import spec

    (lab.root / "bad" / "bad.yaml").write_text(
        "name: bad\nruntime_image: owner/image:tag\nnodes:\n  boom: {notebook: boom.ipynb}\n"
        "  fine: {notebook: fine.ipynb}\n  after: {notebook: after.ipynb, after: [boom]}\n")
    spec.build(lab.root / "bad" / "bad.yaml")
    answer = lab.post("elyra/pipeline/schedule", editor_request(lab, "bad/bad.pipeline"))
    assert answer.status_code == 500
    body = answer.json()
    assert body["reason"] == "Pipeline run failed"
    assert "boom" in body["message"] and "the input table is empty" in body["message"]
    assert "skipped: after" in body["message"] and "report.html" in body["message"]
    run = sorted((lab.root / "runs").glob("bad-*"))[-1]
    record = json.loads((run / "run.json").read_text())
    assert {k: v["status"] for k, v in record["nodes"].items()} == {"boom": "failed", "fine": "succeeded",
                                                                    "after": "skipped"}


def _custom_component(doc: dict) -> None:
    node = doc["pipelines"][0]["nodes"][0]
    node["op"] = "url-catalog:0123456789ab"


def test_a_custom_component_on_the_local_runtime_is_refused_and_nothing_runs(lab):
    runs = set((lab.root / "runs").glob("*")) if (lab.root / "runs").exists() else set()
    answer = lab.post("elyra/pipeline/schedule", editor_request(lab, "work/pair.pipeline", edit=_custom_component))
    assert answer.status_code == 400
    issues = answer.json()["issues"]
    assert any("runtime-specific component" in i["message"] for i in issues)
    assert set((lab.root / "runs").glob("*")) == runs


def test_a_missing_notebook_is_refused_and_nothing_runs(lab):
    def missing(doc: dict) -> None:
        doc["pipelines"][0]["nodes"][1]["app_data"]["component_parameters"]["filename"] = "work/gone.ipynb"

    runs = set((lab.root / "runs").glob("*")) if (lab.root / "runs").exists() else set()
    answer = lab.post("elyra/pipeline/schedule", editor_request(lab, "work/pair.pipeline", edit=missing))
    assert answer.status_code == 400
    assert any("work/gone.ipynb" in json.dumps(i) for i in answer.json()["issues"])
    assert set((lab.root / "runs").glob("*")) == runs


@pytest.mark.skipif(shutil.which("Rscript") is not None, reason="R is installed here")
def test_an_r_node_without_r_is_refused_before_anything_runs(lab):
    work = lab.root / "rwork"
    work.mkdir()
    (work / "stats.r").write_text("print(1)\n")
    make_notebook(work / "first.ipynb", "x = 1", "print('should not run')")
    (work / "r.yaml").write_text("name: withr\nruntime_image: owner/image:tag\nnodes:\n"
                                 "  first: {notebook: first.ipynb}\n  stats: {script: stats.r, after: [first]}\n")
    from nbplugins.pipelines import spec

    spec.build(work / "r.yaml")
    answer = lab.post("elyra/pipeline/schedule", editor_request(lab, "rwork/r.pipeline"))
    assert answer.status_code == 500
    body = answer.json()
    assert body["reason"] == "Pipeline not run"
    assert "'stats' is an R script, but Rscript is not installed" in body["message"]
    assert "nothing was run" in body["message"]
    assert not list((lab.root / "runs").glob("withr-*"))


def test_without_the_switch_elyra_runs_it_in_place(lab_elyra):
    work = lab_elyra.root / "work"
    make_notebook(work / "solo.ipynb", "x = 1", "print('solo ran')")
    (work / "solo.yaml").write_text("name: solo\nruntime_image: owner/image:tag\nnodes:\n  solo: {notebook: solo.ipynb}\n")
    from nbplugins.pipelines import spec

    spec.build(work / "solo.yaml")
    before = (work / "solo.ipynb").read_text()
    answer = lab_elyra.post("elyra/pipeline/schedule", editor_request(lab_elyra, "work/solo.pipeline"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"platform": "LOCAL"}  # Elyra's own response: no run folder, no report
    assert not (lab_elyra.root / "runs").exists()
    after = (work / "solo.ipynb").read_text()
    assert after != before and "solo ran" in after  # executed in place: Elyra's processor ran it
