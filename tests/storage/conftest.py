"""S3, Keystone and fault-proxy fixtures for the storage and papermill I/O tests."""

from __future__ import annotations

import sys
import uuid
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


@pytest.fixture(scope="session")
def rclone_secret() -> str:
    return f"CANARY{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def rclone(tmp_path_factory, rclone_secret) -> Iterator[harness.ServerProcess]:
    """``rclone serve s3`` over a temp dir (SigV4 checked; the secret key is a canary)."""
    root = tmp_path_factory.mktemp("rclone-data")
    server = s3_servers.start_rclone(root, secret_key=rclone_secret, log_dir=tmp_path_factory.mktemp("rclone-log"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Iterator[harness.ServerProcess]:
    server = s3_servers.start_moto(log_dir=tmp_path_factory.mktemp("moto-log"))
    yield server
    server.stop()


@pytest.fixture
def bucket(rclone) -> str:
    """A fresh bucket on the rclone server."""
    import boto3

    name = f"b-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=rclone.url, region_name="us-east-1",
                          aws_access_key_id=str(rclone.extra["access_key"]),
                          aws_secret_access_key=str(rclone.extra["secret_key"]))
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_env(rclone, monkeypatch) -> dict[str, str]:
    """The AWS_* environment pointing the default profile at rclone."""
    env = s3_servers.aws_env(rclone)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


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
