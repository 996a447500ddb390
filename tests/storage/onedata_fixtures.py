"""Fixtures for the Onedata test server and filesystem; import them explicitly:

    from tests.storage.onedata_fixtures import onedata_server, onedata_fs, onedata_env  # noqa: F401

``onedata_server`` (session): the HTTPS Onezone+Oneprovider of ``tests/servers/onedata.py`` with
spaces ``space1`` and ``space2`` and one valid REST token. ``onedata_env`` (per test): points
nbplugins at it through ``ONEDATA_PROVIDER`` / ``ONEDATA_ZONE`` / ``ONEDATA_TOKEN`` /
``ONEDATA_VERIFY`` so ``fsspec.open("onedata://space1/...")`` (and papermill) just work.
``onedata_fs`` (per test): an ``OnedataFileSystem`` on it with a fresh directory, removed after.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.servers import harness

SPACES = ("space1", "space2")


@dataclass
class OnedataServer:
    """A running test Onedata: where it is, its CA, a valid token, and its test controls."""

    process: harness.ServerProcess
    url: str  # https://127.0.0.1:PORT (Onezone and Oneprovider alike)
    host: str  # 127.0.0.1:PORT (what the official client wants)
    ca: str  # the self-signed certificate (its own CA)
    token: str  # a valid Onedata REST token
    oneclient_token: str  # a token limited to oneclient, refused by REST
    spaces: dict[str, str]  # space id -> name
    data: Path  # where the spaces' files are on disk

    def fault(self, count: int = 1, status: int = 503, method: str | None = None, match: str | None = None,
              skip: int = 0) -> None:
        """Make the next ``count`` matching requests answer ``status`` (after ``skip`` matches)."""
        body = {"count": count, "status": status, "method": method, "match": match, "skip": skip}
        requests.post(f"{self.url}/__control/fault", json=body, verify=self.ca, timeout=10).raise_for_status()

    def reset(self) -> None:
        requests.post(f"{self.url}/__control/reset", verify=self.ca, timeout=10).raise_for_status()

    def counts(self) -> dict[str, int]:
        return requests.get(f"{self.url}/__control/counts", verify=self.ca, timeout=10).json()

    def minted(self) -> dict:
        return requests.get(f"{self.url}/__control/minted", verify=self.ca, timeout=10).json()

    def space_dir(self, name: str) -> Path:
        sid = next(s for s, n in self.spaces.items() if n == name)
        return self.data / "spaces" / sid


@pytest.fixture(scope="session")
def onedata_server(tmp_path_factory) -> Iterator[OnedataServer]:
    """The test Onezone+Oneprovider over HTTPS (self-signed), for the whole session."""
    root = tmp_path_factory.mktemp("onedata")
    token = "MDAx" + secrets.token_urlsafe(40)
    oneclient = "MDAx" + secrets.token_urlsafe(40)
    argv = [sys.executable, "-m", "tests.servers.onedata", "--port", "{port}", "--root", str(root)]
    for space in SPACES:
        argv += ["--space", space]
    env = {"ONEDATA_TEST_TOKENS": token, "ONEDATA_TEST_ONECLIENT_TOKENS": oneclient}
    port = harness.free_port()
    url = f"https://{harness.HOST}:{port}"
    process = harness.start("onedata", argv, port=port, url=url, ready=harness.http_ready(url, verify=False),
                            env=env, cwd=str(Path(__file__).resolve().parents[2]), log_dir=root / "log")
    ready = root / "state" / "ready"
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    server = OnedataServer(process, url, f"{harness.HOST}:{port}", str(root / "state" / "cert.pem"),
                           token, oneclient, info["spaces"], root)
    yield server
    process.stop()


@pytest.fixture
def onedata_env(onedata_server, monkeypatch) -> OnedataServer:
    """Environment pointing nbplugins at the test server (provider, zone, token, CA)."""
    monkeypatch.setenv("ONEDATA_PROVIDER", onedata_server.url)
    monkeypatch.setenv("ONEDATA_ZONE", onedata_server.url)
    monkeypatch.setenv("ONEDATA_TOKEN", onedata_server.token)
    monkeypatch.setenv("ONEDATA_VERIFY", onedata_server.ca)
    monkeypatch.setenv("ONEDATA_BLOCK_SIZE_MIB", "1")
    monkeypatch.delenv("ONECLIENT_ACCESS_TOKEN", raising=False)
    onedata_server.reset()
    return onedata_server


@pytest.fixture
def onedata_fs(onedata_env):
    """A filesystem on the test server (1 MiB blocks, quick retries) and a fresh ``space1/<dir>``."""
    from nbplugins.retry import Retry
    from nbplugins.storage.onedata import OnedataFileSystem

    fs = OnedataFileSystem(retry=Retry(initial=0.05, cap=0.2, deadline=30), skip_instance_cache=True)
    base = f"space1/t-{uuid.uuid4().hex[:10]}"
    fs.makedirs(base)
    fs.test_base = base
    yield fs
    with contextlib.suppress(FileNotFoundError):
        fs.rm(base, recursive=True)
