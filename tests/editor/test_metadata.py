"""Factory metadata: the code snippets and runtime images nbplugins ships are listed by the
editor's own endpoints, and `python -m nbplugins.editor.factory` installs what a fresh editable
install leaves out."""

from __future__ import annotations

import json
from pathlib import Path

from nbplugins.editor import factory

SNIPPETS = {"nbplugins-hub-token", "nbplugins-s3-pandas", "nbplugins-onedata-pandas", "nbplugins-stage-folder",
            "nbplugins-sweep"}


def test_the_editor_lists_our_code_snippets(lab):
    answer = lab.get("elyra/metadata/code-snippets")
    assert answer.status_code == 200
    listed = {item["name"]: item for item in answer.json()["code-snippets"]}
    assert set(listed) >= SNIPPETS
    for name in SNIPPETS:
        assert listed[name]["metadata"]["language"] == "Python" and "nbplugins" in listed[name]["metadata"]["tags"]


def test_the_editor_lists_our_runtime_images(lab):
    answer = lab.get("elyra/metadata/runtime-images")
    listed = {item["name"]: item["metadata"]["image_name"] for item in answer.json()["runtime-images"]}
    assert listed["nbplugins-runtime"] == "localhost/nbplugins-runtime:0.1.0"
    assert listed["nbplugins-scipy-notebook"] == "quay.io/jupyter/scipy-notebook:2025-03-14"


def test_the_runtime_image_builds_on_the_pinned_scipy_image():
    containerfile = (Path(factory.__file__).parent / "Containerfile").read_text()
    assert "FROM quay.io/jupyter/scipy-notebook:2025-03-14" in containerfile
    image = json.loads((factory.SOURCE / "runtime-images" / "nbplugins-runtime.json").read_text())
    assert image["metadata"]["image_name"] in containerfile  # the build line tags what the metadata names


def test_factory_install_copies_only_what_is_missing_or_differs(tmp_path):
    installed = factory.install(str(tmp_path))
    assert {p.relative_to(factory.target(str(tmp_path))) for p in installed} == set(factory.shipped())
    assert factory.missing(str(tmp_path)) == [] and factory.install(str(tmp_path)) == []
    (factory.target(str(tmp_path)) / "code-snippets" / "nbplugins-sweep.json").write_text("{}")
    assert factory.missing(str(tmp_path)) == [Path("code-snippets/nbplugins-sweep.json")]


def test_this_environment_has_the_factory_metadata_installed():
    assert factory.missing() == [], "run: python -m nbplugins.editor.factory (make install does)"
