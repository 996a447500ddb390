"""Sandbox: time until a usable local stack, `nbplugins sandbox up --detach` vs moto's server, same run.

moto (``moto_server``) is what AWS users start for a local S3. Each round times, from nothing
to a stack a client can use with the sample data in place:

- moto: start ``moto_server``, wait until it answers, create a bucket, upload the two samples (boto3);
- ``nbplugins sandbox up --detach --services s3``: S3 with the samples, the private profile written;
- ``nbplugins sandbox up --detach``: OIDC issuer (a user logged in), S3 and Onedata, samples in both;

then stops it (``down`` for ours), also timed. Medians over ``--rounds``.

    .venv/bin/python benchmarks/sandbox.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = [ROOT / "templates" / "data" / name for name in ("measurements.csv", "temperature.nc")]


def moto_round() -> tuple[float, float]:
    import boto3
    from botocore.config import Config

    from nbplugins.sandbox import harness

    start = time.perf_counter()
    server = harness.start("moto", [harness.venv_bin("moto_server"), "-H", "127.0.0.1", "-p", "{port}"],
                           log_dir=tempfile.mkdtemp(prefix="nbp-bench-moto-"))
    client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s", config=Config(request_checksum_calculation="when_required"))
    client.create_bucket(Bucket="sandbox")
    for path in SAMPLES:
        client.upload_file(str(path), "sandbox", f"data/{path.name}")
    ready = time.perf_counter() - start
    start = time.perf_counter()
    server.stop()
    return ready, time.perf_counter() - start


def ours_round(services: str | None) -> tuple[float, float]:
    directory = tempfile.mkdtemp(prefix="nbp-bench-sandbox-")
    cli = [sys.executable, "-m", "nbplugins", "sandbox"]
    extra = ["--services", services] if services else []
    start = time.perf_counter()
    subprocess.run([*cli, "up", "--detach", "--dir", directory, *extra], check=True, capture_output=True)
    ready = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([*cli, "down", "--dir", directory], check=True, capture_output=True)
    return ready, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cases = {
        "moto_server + bucket + samples (boto3)": moto_round,
        "nbplugins sandbox up --services s3": lambda: ours_round("s3"),
        "nbplugins sandbox up --services oidc,s3,onedata": lambda: ours_round("oidc,s3,onedata"),
    }
    results: dict[str, tuple[float, float]] = {}
    for name, run in cases.items():
        rounds = [run() for _ in range(args.rounds)]
        results[name] = (statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds))
    base = results["moto_server + bucket + samples (boto3)"][0]
    print(f"{'stack':<44} {'ready s':>8} {'stop s':>8} {'ready vs moto':>14}")
    for name, (ready, stop) in results.items():
        print(f"{name:<44} {ready:>8.2f} {stop:>8.2f} {ready / base:>13.2f}x")


if __name__ == "__main__":
    main()
