"""templates/openstack_servers.ipynb runs with ``papermill --engine nbplugins`` against the Keystone
test server: the site and the project are parameters, the token comes from the environment and
stays out of the executed notebook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbplugins import scraps
from tests import test_openstack
from tests.test_openstack import OUTSIDER, PROJECT, SERVER_NAMES

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "openstack_servers.ipynb"
PAPERMILL = str(Path(sys.executable).parent / "papermill")
keystone = test_openstack.keystone  # the same fixture

pytestmark = pytest.mark.timeout(300)


def papermill(out: Path, env: dict[str, str], **params: str) -> subprocess.CompletedProcess[str]:
    argv = [PAPERMILL, "--engine", "nbplugins", str(TEMPLATE), str(out), "--cwd", str(out.parent)]
    for key, value in params.items():
        argv += ["-p", key, value]
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, env={**os.environ, **env})


def test_the_template_says_what_it_does_and_declares_site_and_project():
    nb = nbformat.read(TEMPLATE, as_version=4)
    header = nb.cells[0].source
    assert nb.cells[0].cell_type == "markdown" and header.startswith("# ")
    assert all(word in header for word in ("**Inputs**", "**Outputs**", "**Services**", "`site`", "`project_id`"))
    [parameters] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert "site =" in parameters.source and "project_id =" in parameters.source
    assert "token" not in parameters.source.lower()


def test_the_template_lists_the_project_servers(keystone, make_jwt, canary, tmp_path):
    token = make_jwt(sub="template@egi.eu", jti=canary)
    out = tmp_path / "servers.ipynb"
    done = papermill(out, {"OIDC_ACCESS_TOKEN": token}, site=f"{keystone.url}/v3", project_id=PROJECT)
    assert done.returncode == 0, done.stderr[-3000:]
    values = scraps.read(nbformat.read(out, as_version=4))
    assert values["server_count"] == 3 and {s["name"] for s in values["servers"]} == SERVER_NAMES
    text = out.read_text()
    assert "pangeo-worker-2" in text and "m1.large" in text
    everything = text + done.stdout + done.stderr
    assert token not in everything and canary not in everything


def test_the_template_with_a_site_from_the_config_and_its_project(keystone, make_jwt, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[openstack.sites.cesnet]\nauth_url = "{keystone.url}/v3"\nproject_id = "{PROJECT}"\n')
    out = tmp_path / "servers.ipynb"
    done = papermill(out, {"OIDC_ACCESS_TOKEN": make_jwt(), "NBPLUGINS_CONFIG": str(config)}, site="cesnet")
    assert done.returncode == 0, done.stderr[-3000:]
    assert scraps.read(nbformat.read(out, as_version=4))["server_count"] == 3


def test_a_project_the_user_cannot_scope_to_fails_the_run_with_one_named_reason(keystone, make_jwt, canary,
                                                                                tmp_path):
    token = make_jwt(jti=canary)
    out = tmp_path / "servers.ipynb"
    done = papermill(out, {"OIDC_ACCESS_TOKEN": token}, site=keystone.url, project_id=OUTSIDER)
    assert done.returncode != 0
    assert f"cannot scope to project {OUTSIDER}" in done.stderr + out.read_text()
    assert token not in done.stderr + out.read_text() and canary not in done.stderr + out.read_text()
