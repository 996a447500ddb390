"""Fixtures for link and pull tests: upstream content repos (bare, local), a loopback
smart-HTTP git server, a real JupyterHub, a jupyter server with nbgitpuller, headless Chromium."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import gitrepo, harness, jupyterhub


@pytest.fixture
def content_repo(tmp_path) -> gitrepo.ContentRepo:
    """A bare upstream repo with templates/ and pipelines/, and the instructor's work clone."""
    return gitrepo.make_content_repo(tmp_path / "upstream")


@pytest.fixture(scope="session")
def git_server(tmp_path_factory) -> Iterator[tuple[Path, harness.ServerProcess]]:
    """A smart-HTTP git server on 127.0.0.1 serving every repo under one root."""
    root = tmp_path_factory.mktemp("git-served")
    server = gitrepo.start_http(root, log_dir=tmp_path_factory.mktemp("git-http-log"))
    yield root, server
    server.stop()


@pytest.fixture
def http_repo(git_server) -> tuple[gitrepo.ContentRepo, str]:
    """A fresh content repo served over http://127.0.0.1 (as from GitHub): (repo, its URL)."""
    root, server = git_server
    repo = gitrepo.make_content_repo(root, name=f"course-{uuid.uuid4().hex[:6]}.git")
    return repo, f"{server.url}{repo.bare.name}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[harness.ServerProcess]:
    """A real JupyterHub (dummy login, local spawner, homes in a temp dir) on 127.0.0.1."""
    if not jupyterhub.nbgitpuller_enabled():
        pytest.fail("nbgitpuller's server extension is not enabled in this venv "
                    "(jupyter server extension list); run `make install`")
    state = tmp_path_factory.mktemp("jupyterhub")
    server = jupyterhub.start(state, state / "homes")
    yield server
    jupyterhub.stop(server)


@pytest.fixture
def browser(tmp_path, monkeypatch) -> Iterator[object]:
    """Headless Chromium driven by selenium, with a fresh profile; skipped without chromium."""
    with jupyterhub.chromium(tmp_path, monkeypatch, window="1280,900") as driver:
        yield driver
