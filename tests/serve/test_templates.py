"""Notebooks made from templates: ``template=NAME`` with ``p.NAME=VALUE`` or a JSON body,
parameterized with papermill (never executed), answered with the hub URL that opens them."""

from __future__ import annotations

import json
import uuid

import nbformat
import pytest
import requests

from tests.serve.conftest import make_users, remove_users, snapshot, start_service

TEMPLATE = """{
 "cells": [
  {"cell_type": "code", "execution_count": null, "id": "p", "metadata": {"tags": ["parameters"]},
   "outputs": [], "source": ["sample = \\"S1\\"\\nreplicates = 3\\nthreshold = 0.5\\nnormalize = False"]},
  {"cell_type": "code", "execution_count": null, "id": "w", "metadata": {}, "outputs": [],
   "source": ["print(sample, replicates)"]}
 ],
 "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
              "language_info": {"name": "python"}},
 "nbformat": 4, "nbformat_minor": 5
}"""


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A service with a token file, a template catalogue and a hub URL; (url, token, home)."""
    base = tmp_path_factory.mktemp("templates")
    (base / "catalogue").mkdir()
    (base / "catalogue" / "assay.ipynb").write_text(TEMPLATE)
    users = make_users(base / "homes", 1)
    token = f"tok-{uuid.uuid4().hex}"
    (base / "tokens").write_text(f"{token} {users[0]}\n")
    try:
        service = start_service("--homes", str(base / "homes" / "{user}"), "--token-file", str(base / "tokens"),
                                "--templates", str(base / "catalogue"), "--hub-url", "https://hub.example.org/",
                                log_dir=base)
        yield service.url, token, base / "homes" / users[0]
        service.stop()
    finally:
        remove_users(base / "homes", users)


def post(catalogue, body: str | bytes = b"", **params: str) -> requests.Response:
    url, token, _ = catalogue
    return requests.post(url, params={"token": token, **params}, data=body, timeout=60)


def injected(path) -> str:
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    return cell.source


def test_query_parameters_are_typed_like_the_templates_defaults(catalogue):
    answer = post(catalogue, template="assay", folder="runs", **{"p.sample": "S-42", "p.replicates": "5",
                                                                 "p.threshold": "0.75", "p.normalize": "yes"})
    assert answer.status_code == 200, answer.text
    home = catalogue[2]
    assert answer.json() == {"fileName": "assay.ipynb", "path": str(home / "runs" / "assay.ipynb"),
                             "url": "https://hub.example.org/hub/user-redirect/lab/tree/runs/assay.ipynb"}
    source = injected(home / "runs" / "assay.ipynb")
    assert 'sample = "S-42"' in source and "replicates = 5" in source
    assert "threshold = 0.75" in source and "normalize = True" in source
    nb = nbformat.read(home / "runs" / "assay.ipynb", as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")  # not executed
    nbformat.validate(nb)


def test_a_json_body_gives_parameters_and_filename_and_folder_default(catalogue):
    answer = post(catalogue, json.dumps({"sample": "from body", "replicates": 7}), template="assay",
                  filename="mine.ipynb")
    assert answer.status_code == 200, answer.text
    assert answer.json()["url"].endswith("/lab/tree/mine.ipynb")
    source = injected(catalogue[2] / "mine.ipynb")
    assert 'sample = "from body"' in source and "replicates = 7" in source


def test_a_dry_run_of_a_template_checks_it_and_writes_nothing(catalogue):
    before = snapshot(catalogue[2])
    answer = post(catalogue, "TEST", template="assay", folder="dry", test="True", **{"p.replicates": "2"})
    assert answer.status_code == 200 and answer.json()["fileName"] == "assay.ipynb"
    assert snapshot(catalogue[2]) == before


def test_the_project_templates_are_on_offer_too(catalogue):
    answer = post(catalogue, template="random_walk", folder="walks", **{"p.drift": "0.25", "p.steps": "10"})
    assert answer.status_code == 200, answer.text
    assert "drift = 0.25" in injected(catalogue[2] / "walks" / "random_walk.ipynb")


@pytest.mark.parametrize("params, body, status, says", [
    ({"template": "nope"}, b"", 404, "unknown template 'nope'; templates on offer: assay"),
    ({"template": "../assay"}, b"", 400, "plain name"),
    ({"template": "assay", "p.replicates": "many"}, b"", 400, "not an int"),
    ({"template": "assay", "p.normalize": "perhaps"}, b"", 400, "not true or false"),
    ({"template": "assay", "p.color": "red"}, b"", 400, "unknown parameter color"),
    ({"template": "assay", "p.sample": "@env:HOME"}, b"", 400, "secret references"),
    ({"template": "assay"}, b"[1]", 400, "JSON object of parameters"),
    ({"template": "assay"}, b"{", 400, "JSON object of parameters"),
    ({"template": "assay", "filename": "x.py"}, b"", 400, ".ipynb"),
])
def test_bad_templates_and_parameters_are_refused_and_nothing_is_written(catalogue, params, body, status, says):
    before = snapshot(catalogue[2])
    answer = post(catalogue, body, **params)
    assert answer.status_code == status and says in answer.json()["message"]
    assert snapshot(catalogue[2]) == before


def test_a_second_template_notebook_gets_a_numbered_name(catalogue):
    first = post(catalogue, template="assay", folder="twice").json()["fileName"]
    second = post(catalogue, template="assay", folder="twice").json()["fileName"]
    assert (first, second) == ("assay.ipynb", "assay 2.ipynb")
