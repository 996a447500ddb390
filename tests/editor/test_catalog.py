"""The Kubeflow Pipelines palette: our catalog connector (found through its entry point and
schema provider, with a factory catalog instance) puts the four nbplugins components into
`GET /elyra/pipeline/components/kfp`; no component takes a credential as an input."""

from __future__ import annotations

import re
import time

import yaml

from nbplugins.editor import catalog

NAMES = {"nbplugins stage-in", "nbplugins publish", "nbplugins DataMiner or CCP process", "nbplugins OSCAR run"}


def palette_labels(lab) -> set[str]:
    deadline = time.monotonic() + 120
    labels: set[str] = set()
    while time.monotonic() < deadline:  # the component cache loads catalogs in the background
        answer = lab.get("elyra/pipeline/components/KUBEFLOW_PIPELINES")
        assert answer.status_code == 200, answer.text
        labels = {node["label"] for cat in answer.json()["categories"] for node in cat["node_types"]}
        if labels >= NAMES:
            break
        time.sleep(1)
    return labels


def test_the_kfp_palette_lists_our_components(lab):
    assert palette_labels(lab) >= NAMES
    answer = lab.get("elyra/pipeline/components/kfp")  # the shorthand the issue names works too
    assert answer.status_code == 200 and "nbplugins stage-in" in answer.text
    categories = {cat["label"] for cat in lab.get("elyra/pipeline/components/kfp").json()["categories"]}
    assert "nbplugins" in categories


def test_components_run_nbplugins_and_take_no_credentials_as_inputs():
    files = catalog.component_files()
    assert {yaml.safe_load(f.read_text())["name"] for f in files} == NAMES
    for path in files:
        spec = yaml.safe_load(path.read_text())
        names = [i["name"] for i in spec.get("inputs", [])]
        assert not [n for n in names if re.search(r"token|secret|password|key|credential", n, re.I)], path
        script = " ".join(str(part) for part in spec["implementation"]["container"]["command"])
        assert "nbplugins " in script
        assert spec["metadata"]["labels"]["nbplugins-credentials"] == "true"  # the PodDefault's selector


def test_the_connector_serves_only_its_own_files():
    connector = catalog.NbpluginsCatalogConnector(file_types=[".yaml"])
    entries = connector.get_catalog_entries({})
    assert {e["component-id"] for e in entries} == {f.name for f in catalog.component_files()}
    assert connector.get_entry_data({"component-id": "../catalog.py"}, {}) is None
    assert "nbplugins data get" in connector.get_entry_data({"component-id": "stage_in.yaml"}, {}).definition
