"""Loopback S3 servers for the sandbox, tests and benchmarks: ``rclone serve s3`` and moto server.

rclone serves a local directory with real SigV4 checks and MD5 ETags; moto has exact S3
semantics (multipart ETags, ranges, 404s for missing buckets) and accepts any keys.
"""

from __future__ import annotations

import os
import secrets as _random
from pathlib import Path

from nbplugins.sandbox import harness

ACCESS_KEY = "nbplugins-test-access"


def start_rclone(root: str | os.PathLike[str], *, access_key: str = ACCESS_KEY, secret_key: str | None = None,
                 log_dir: str | os.PathLike[str] | None = None, buckets: tuple[str, ...] = (),
                 **kwargs: object) -> harness.ServerProcess:
    """``rclone serve s3`` over ``root`` (each subdirectory is a bucket), keys checked.

    ``kwargs`` go to :func:`harness.start` (``port``, ``detach``, ``timeout``).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for bucket in buckets:
        (root / bucket).mkdir(exist_ok=True)
    secret_key = secret_key or f"secret-{_random.token_hex(16)}"
    argv = [
        harness.venv_bin("rclone"), "serve", "s3", "--addr", "127.0.0.1:{port}",
        "--auth-key", f"{access_key},{secret_key}", "--config", "/dev/null",
        "--vfs-cache-mode", "off", str(root),
    ]
    server = harness.start("rclone-s3", argv, log_dir=log_dir,  # type: ignore[arg-type]
                           env={"RCLONE_CONFIG": "/dev/null"}, **kwargs)
    server.extra.update(access_key=access_key, secret_key=secret_key, root=str(root))
    return server


def start_moto(log_dir: str | os.PathLike[str] | None = None, **kwargs: object) -> harness.ServerProcess:
    """moto's S3 server (any keys accepted)."""
    server = harness.start("moto-s3", [harness.venv_bin("moto_server"), "-H", "127.0.0.1", "-p", "{port}"],
                           ready=None, log_dir=log_dir, **kwargs)  # type: ignore[arg-type]
    server.extra.update(access_key="moto-access-key", secret_key="moto-secret-key")
    return server


def aws_env(server: harness.ServerProcess, url: str | None = None) -> dict[str, str]:
    """The ``AWS_*`` variables that point any S3 client at ``server`` (or a proxy in front)."""
    return {
        "AWS_ENDPOINT_URL_S3": url or server.url,
        "AWS_ACCESS_KEY_ID": str(server.extra["access_key"]),
        "AWS_SECRET_ACCESS_KEY": str(server.extra["secret_key"]),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
