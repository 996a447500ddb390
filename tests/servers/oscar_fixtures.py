"""pytest fixtures for the OSCAR test server (:mod:`nbplugins.sandbox.servers.oscar`), each with its own S3.

Use them from a test module or a conftest::

    from tests.servers.oscar_fixtures import oscar_factory, oscar_server  # noqa: F401

``oscar_server`` (session) is a v4 cluster with Knative. ``oscar_factory(version="v3"|"v4",
knative=True|False, **settings)`` starts more (stopped at session end); ``start_oscar(...)``
does the same outside pytest (benchmarks). Each returns an :class:`OscarServer`:

- ``url``; ``user``, ``password`` (Basic, ``/system`` only); ``version`` (``"v3"`` flat job
  lists and 409 for a duplicate, ``"v4"`` paginated lists and 400); ``knative`` (``/run`` or 404)
- ``oidc_token``: a JWT for ``oidc_sub``, member of ``vo.example.eu`` (and ``vo.other.eu`` is not
  his); ``other_vo_token``: for ``other_sub``, member of ``vo.other.eu`` only. Both are accepted
  by the cluster (``oidc_groups`` = both VOs); services with ``vo: vo.example.eu`` answer 403 to
  the second. ``add_token(sub, vos, lifetime=)`` registers one more (e.g. expiring).
- ``s3_endpoint``: the MinIO endpoint ``/system/config`` advertises (a counting proxy in front
  of an ``rclone serve s3``); ``s3_keys``: ``{"access_key", "secret_key"}`` given to Basic users;
  ``user_keys[sub]``: the MinIO keys provisioned for each OIDC user.
- ``count(path_prefix) -> int``: API requests whose path starts with the prefix (``"/job/"``,
  ``"/system/logs/svc"``); a prefix starting ``"s3:"`` counts S3 requests through the proxy
  (``"s3:"`` all, ``"s3:/bucket/in/"`` by path). ``reset_counts()``.
- ``configure(job_seconds=, pending_seconds=, slots=, fail_inputs_matching=REGEX,
  cold_starts=N, outputs=N, poll_seconds=, page_size=)``: ``POST /_control/configure``;
  returns the settings now in force. ``jobs()``: every job (name, service, input, status,
  outputs, times). ``s3_client()``: a boto3 client with the admin keys.
"""

from __future__ import annotations

import os
import secrets as _random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from nbplugins.sandbox import harness
from nbplugins.sandbox.servers import oscar as oscar_server_module

ISSUER = "https://aai.egi.eu/auth/realms/egi"
VO = "vo.example.eu"
OTHER_VO = "vo.other.eu"
SIGNING_KEY = "oscar-test-signing-key-not-a-secret"


def make_token(sub: str, vos: tuple[str, ...], lifetime: float = 86400, iss: str = ISSUER) -> str:
    """An EGI-like access token (JWT) for ``sub`` with ``entitlements`` for ``vos``."""
    now = int(time.time())
    claims = {"sub": sub, "iss": iss, "aud": "token-portal", "iat": now, "exp": int(now + lifetime),
              "entitlements": [f"urn:mace:egi.eu:group:{vo}:role=member#aai.egi.eu" for vo in vos],
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, SIGNING_KEY, algorithm="HS256")


@dataclass
class OscarServer:
    """A running OSCAR test server and the S3 server behind it."""

    url: str
    user: str
    password: str
    oidc_token: str
    other_vo_token: str
    oidc_sub: str
    other_sub: str
    version: str
    knative: bool
    s3_endpoint: str
    s3_keys: dict[str, str]
    user_keys: dict[str, dict[str, str]]
    process: harness.ServerProcess
    s3: harness.ServerProcess
    extra_users: list[dict] = field(default_factory=list)

    def _control(self, method: str, what: str, payload: Any = None) -> requests.Response:
        response = requests.request(method, f"{self.url}/_control/{what}", json=payload, timeout=30)
        response.raise_for_status()
        return response

    def count(self, path_prefix: str) -> int:
        """Requests the server saw whose path starts with ``path_prefix`` (``s3:`` prefix: S3 ones)."""
        counts = self._control("GET", "counts").json()
        if path_prefix.startswith("s3:"):
            prefix = path_prefix[3:]
            return sum(n for path, n in counts["s3"].items() if path.startswith(prefix))
        return sum(n for path, n in counts["api"].items() if path.startswith(path_prefix))

    def reset_counts(self) -> None:
        self._control("POST", "reset_counts")

    def configure(self, **settings: Any) -> dict:
        """Change job times, slots, failures, cold starts, outputs; returns the settings in force."""
        return self._control("POST", "configure", settings).json()

    def jobs(self) -> list[dict]:
        return self._control("GET", "jobs").json()

    def add_token(self, sub: str, vos: tuple[str, ...] = (VO,), lifetime: float = 3600) -> str:
        """Make the server accept one more token (admin MinIO keys); returns it."""
        token = make_token(sub, vos, lifetime)
        self._control("POST", "tokens", {"token": token, **self.s3_keys})
        return token

    def s3_client(self):  # noqa: ANN201 - boto3 types are not installed
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=self.s3_keys["access_key"],
                            aws_secret_access_key=self.s3_keys["secret_key"])

    def stop(self) -> None:
        self.process.stop()
        self.s3.stop()


def _start_s3(root: Path, keys: list[tuple[str, str]], log_dir: Path) -> harness.ServerProcess:
    """``rclone serve s3`` over ``root`` accepting every key pair (MinIO users share the store)."""
    root.mkdir(parents=True, exist_ok=True)
    argv = [harness.venv_bin("rclone"), "serve", "s3", "--addr", "127.0.0.1:{port}", "--config", "/dev/null",
            "--vfs-cache-mode", "off"]
    for access, secret in keys:
        argv += ["--auth-key", f"{access},{secret}"]
    return harness.start("oscar-s3", [*argv, str(root)], log_dir=log_dir, env={"RCLONE_CONFIG": "/dev/null"})


def start_oscar(work_dir: str | os.PathLike[str] | None = None, *, version: str = "v4", knative: bool = True,
                count_s3: bool = True, **settings: Any) -> OscarServer:
    """Start an S3 server and an OSCAR test server in front of it."""
    work = Path(work_dir or tempfile.mkdtemp(prefix="nbp-oscar-"))
    work.mkdir(parents=True, exist_ok=True)
    admin = {"access_key": "minio-admin", "secret_key": f"minio-{_random.token_hex(16)}"}
    suffix = uuid.uuid4().hex[:8]
    oidc_sub, other_sub = f"alice-{suffix}@egi.eu", f"bob-{suffix}@egi.eu"
    user_keys = {sub: {"access_key": f"{sub.split('@')[0]}", "secret_key": f"minio-{_random.token_hex(16)}"}
                 for sub in (oidc_sub, other_sub)}
    keys = [(k["access_key"], k["secret_key"]) for k in (admin, *user_keys.values())]
    s3 = _start_s3(work / "s3-data", keys, work)
    oidc_token, other_token = make_token(oidc_sub, (VO,)), make_token(other_sub, (OTHER_VO,))
    password = f"oscar-{_random.token_hex(12)}"
    cfg = {
        "user": "oscar", "password": password, "version": version, "knative": knative,
        "s3": {"endpoint": s3.url, "upstream_port": s3.port, "count_requests": count_s3, **admin},
        "oidc": {"issuers": [ISSUER], "groups": [VO, OTHER_VO],
                 "users": [{"token": oidc_token, **user_keys[oidc_sub]},
                           {"token": other_token, **user_keys[other_sub]}]},
        "settings": settings,
    }
    cfg_path = oscar_server_module.write_config(work / f"oscar-{suffix}.json", cfg)
    port = harness.free_port()
    try:
        process = harness.start("oscar", [sys.executable, "-m", "nbplugins.sandbox.servers.oscar", "--port", "{port}",
                                          "--config", str(cfg_path)],
                                port=port, ready=harness.http_ready(f"http://127.0.0.1:{port}/health"),
                                log_dir=work)
    except Exception:
        s3.stop()
        raise
    url = f"http://127.0.0.1:{port}"
    config = requests.get(f"{url}/system/config", auth=("oscar", password), timeout=10).json()
    return OscarServer(url=url, user="oscar", password=password, oidc_token=oidc_token, other_vo_token=other_token,
                       oidc_sub=oidc_sub, other_sub=other_sub, version=version, knative=knative,
                       s3_endpoint=config["minio_provider"]["endpoint"], s3_keys=admin, user_keys=user_keys,
                       process=process, s3=s3)


@pytest.fixture(scope="session")
def oscar_factory(tmp_path_factory) -> Iterator[Callable[..., OscarServer]]:
    """Start OSCAR test servers (``version``, ``knative``, job settings); all stopped at the end."""
    started: list[OscarServer] = []

    def start(version: str = "v4", knative: bool = True, **settings: Any) -> OscarServer:
        server = start_oscar(tmp_path_factory.mktemp(f"oscar-{version}"), version=version, knative=knative,
                             **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def oscar_server(oscar_factory) -> OscarServer:
    """A v4 OSCAR cluster with Knative, short jobs (0.3 s), its own S3."""
    return oscar_factory(version="v4", knative=True, job_seconds=0.3)
