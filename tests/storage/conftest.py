"""Keystone and fault-proxy fixtures for the storage and papermill I/O tests (S3 servers: tests/conftest.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbplugins.retry import Retry
from tests.servers import harness
from tests.servers import s3 as s3_servers
from tests.servers.faultproxy import FaultProxy, Faults

ROOT = Path(__file__).resolve().parents[2]
JWT_KEY = "test-signing-key-not-a-secret-0123456789"  # the make_jwt fixture's key
PROJECT = "b3c2f1e0d9a84c7b9e6f5a4d3c2b1a00"


@pytest.fixture
def proxy(rclone, monkeypatch) -> Iterator[FaultProxy]:
    """A pass-through counting proxy in front of rclone; the AWS_* environment points at it."""
    with FaultProxy(rclone.port) as px:
        for key, value in s3_servers.aws_env(rclone, px.url).items():
            monkeypatch.setenv(key, value)
        yield px


@pytest.fixture
def fast_retry() -> Retry:
    """Quick backoff so fault-injection tests stay fast."""
    return Retry(deadline=60, initial=0.02, cap=0.2, error_budget=12)


@pytest.fixture
def keystone_factory(tmp_path_factory):
    """Start the Keystone test server (optionally with EC2 credentials already there)."""
    started: list[harness.ServerProcess] = []

    def start(seed: tuple[tuple[str, str], ...] = ()) -> harness.ServerProcess:
        argv = [sys.executable, "-m", "tests.servers.keystone", "--port", "{port}", "--jwt-key", JWT_KEY,
                "--project", PROJECT]
        for access, secret in seed:
            argv += ["--seed-ec2", f"{access},{secret}"]
        port = harness.free_port()
        server = harness.start("keystone", argv, port=port, cwd=str(ROOT),
                               ready=harness.http_ready(f"http://127.0.0.1:{port}/v3"),
                               log_dir=tmp_path_factory.mktemp("keystone"))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def faults(**kwargs) -> Faults:
    return Faults(**kwargs)
