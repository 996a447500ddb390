"""The service snippets of the palette (DataMiner, CCP / OGC API - Processes, OSCAR) work as shipped:
each runs in a real kernel against the loopback servers, with only its placeholder values changed."""

# ruff: noqa: F811 -- fixtures imported from other test packages are test parameters

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.editor.test_snippets import printed, run_in_kernel, snippet
from tests.servers.oscar_fixtures import oscar_factory, oscar_server  # noqa: F401
from tests.services.conftest import _processes_session, _wps_session, processes_server, wps_server  # noqa: F401
from tests.services.test_oscar import DEFAULTS
from tests.services.test_oscar_template import service

pytestmark = pytest.mark.timeout(300)


def test_the_dataminer_snippet_runs_a_process_and_lists_its_results(wps_server, tmp_path, monkeypatch, canary):
    token = f"{canary}-gcube"
    wps_server.set_tokens(token)
    monkeypatch.setenv("DATAMINER_URL", wps_server.url)
    monkeypatch.setenv("D4SCIENCE_TOKEN", token)
    (tmp_path / "table.csv").write_text("temperature\n2\n4\n")
    code = snippet("nbplugins-dataminer-process").replace('"https://example.org/table.csv"', '"table.csv"')
    text = run_in_kernel(code, tmp_path)
    assert "results/summary.csv" in printed(text) and (tmp_path / "results" / "summary.csv").is_file()
    assert canary not in text


def test_the_ccp_snippet_runs_a_job_and_unpacks_its_results(processes_server, tmp_path, monkeypatch):
    monkeypatch.setenv("D4SCIENCE_TOKEN", processes_server.user_token)
    monkeypatch.setenv("D4SCIENCE_CONTEXT", processes_server.context)
    monkeypatch.setenv("D4SCIENCE_TOKEN_ENDPOINT", processes_server.token_endpoint)
    config = tmp_path / "config.toml"
    config.write_text(f'[processes.ccp]\nurl = "{processes_server.url}"\nauth = "uma"\n')
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(config))
    code = snippet("nbplugins-ccp-process").replace('"my-process"', '"multi-files"')
    text = run_in_kernel(code, tmp_path)
    landed = json.loads((tmp_path / "results" / "results.json").read_text())
    assert {Path(r["location"]).name for r in landed} >= {"part-1.txt", "part-2.txt"}
    assert "part-1.txt" in printed(text) and processes_server.user_token not in text


def test_the_oscar_snippet_runs_a_batch(oscar_server, tmp_path, monkeypatch):
    oscar_server.configure(**DEFAULTS)
    monkeypatch.setenv("OSCAR_ENDPOINT", oscar_server.url)
    monkeypatch.setenv("OSCAR_USER", oscar_server.user)
    monkeypatch.setenv("OSCAR_PASSWORD", oscar_server.password)
    name = service(oscar_server, tmp_path)
    for n in ("input-1.txt", "input-2.txt"):
        (tmp_path / n).write_text(f"hello {n}")
    text = run_in_kernel(snippet("nbplugins-oscar-run").replace('"my-service"', f'"{name}"'), tmp_path)
    table = printed(text)
    assert table.count("succeeded") == 2, table
    assert sorted(p.name for p in (tmp_path / "oscar-results").rglob("*.out")) == ["input-1.out", "input-2.out"]
    assert oscar_server.password not in text
