"""Shared fixtures: an isolated home and config for every test, canary secrets, JWT factory,
and the loopback servers (started per session or per test, always stopped)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import jwt
import pytest

from nbplugins import config, secrets, tokens
from tests.servers import harness, oidc
from tests.servers import s3 as s3_servers

TOKEN_ENV = ("OIDC_ACCESS_TOKEN", "FEDCLOUD_OIDC_ACCESS_TOKEN")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch) -> Iterator[None]:
    """No test sees the developer's config, tokens or hub secret files."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)  # caches go under the test's HOME
    for name in list(__import__("os").environ):
        if name.startswith(("NBPLUGINS_", "OIDC_", "FEDCLOUD_", "AWS_", "ONEDATA_", "OSCAR_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tokens.EgiNotebooksSource, "default_path", str(tmp_path / "egi" / "access_token"))
    monkeypatch.setattr(tokens.EoscNodeSource, "default_path", str(tmp_path / "eosc" / "access_token"))
    tokens.RefreshGrantSource._cache.clear()
    tokens._discovered.clear()
    config._cached = None
    tokens.resolver._default = None
    yield
    secrets.clear()


@pytest.fixture
def canary() -> str:
    """A unique secret-looking value to hunt for in outputs."""
    return f"CANARY{uuid.uuid4().hex}"


@pytest.fixture
def make_jwt():
    """Build an (unsigned-for-us, HS256) JWT with EGI-like claims."""

    def build(sub: str = "alice@egi.eu", lifetime: float = 3600, vos: tuple[str, ...] = ("vo.nbplugins.eu",),
              iss: str = "https://aai.egi.eu/auth/realms/egi", aud: str | list[str] = "nbplugins", **extra) -> str:
        now = int(time.time())
        claims = {"sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": int(now + lifetime),
                  "eduperson_entitlement": [f"urn:mace:egi.eu:group:{vo}:role=member#aai.egi.eu" for vo in vos],
                  "jti": uuid.uuid4().hex, **extra}
        return jwt.encode(claims, "test-signing-key-not-a-secret-0123456789", algorithm="HS256")

    return build


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory) -> Iterator[harness.ServerProcess]:
    """A real OIDC provider (oidc-provider-mock) with 30 s access tokens."""
    server = oidc.start_provider(token_max_age=30, log_dir=tmp_path_factory.mktemp("oidc"))
    yield server
    server.stop()


@pytest.fixture
def oidc_login(oidc_provider):
    """Log a fresh user in at the provider; returns (subject, token response)."""

    def login(sub: str | None = None) -> tuple[str, dict]:
        sub = sub or f"user-{uuid.uuid4().hex[:8]}@egi.eu"
        return sub, oidc.login(oidc_provider.url, sub)

    return login


# ----------------------------------------------------------------------------- S3 servers


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
