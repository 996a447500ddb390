"""End to end in headless Chromium: the repository's step-template pipeline opens in the Elyra
editor with its nodes drawn; Run, with the local runtime, goes through nbplugins and the
completion dialog names the run folder and links the report. Screenshots: tests/artifacts/editor-*.png."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.servers.jupyterhub import chromium_paths

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(chromium_paths() is None, reason="chromium and chromium-driver are not installed "
                       "(make system-deps installs them)"),
]

ARTIFACTS = Path(os.environ.get("NBPLUGINS_ARTIFACTS_DIR") or Path(__file__).resolve().parents[1] / "artifacts")


def keep(driver, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    try:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, ARTIFACTS / name)
    except OSError:
        pass


def test_run_button_in_the_editor_runs_the_pipeline_through_nbplugins(lab, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    pipeline = json.loads((lab.root / "pipelines" / "stage_analyse_publish.pipeline").read_text())
    browser.get(f"{lab.url}lab/tree/pipelines/stage_analyse_publish.pipeline?token={lab.token}")
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "g.d3-node-group")) == len(pipeline["pipelines"][0]["nodes"]))
    links = browser.find_elements(By.CSS_SELECTOR, "path.d3-link-line, path.d3-data-link")
    keep(browser, tmp_path, "editor-pipeline.png")
    assert len(links) >= 5  # stage-in -> prepare -> (summary, correlations) -> publish

    runs_before = set((lab.root / "runs").glob("stage_analyse_publish-*")) if (lab.root / "runs").exists() else set()
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Run Pipeline']").click()
    platform = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Dialog select#runtime_platform")))
    Select(platform).select_by_value("__elyra_local__")  # "Run in-place locally": the local runtime
    keep(browser, tmp_path, "editor-run-dialog.png")
    browser.find_element(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept").click()

    done = WebDriverWait(browser, 300).until(
        lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, ".jp-Dialog") if "succeeded" in e.text), None))
    keep(browser, tmp_path, "editor-run-finished.png")
    runs = set((lab.root / "runs").glob("stage_analyse_publish-*")) - runs_before
    assert len(runs) == 1
    run = runs.pop()
    assert f"runs/{run.name}" in done.text
    details = done.find_element(By.LINK_TEXT, "Run Details.")
    assert details.get_attribute("href").endswith(f"/files/runs/{run.name}/report.html")
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded" and len(record["nodes"]) == 5
