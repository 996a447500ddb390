"""OSCAR batches: N small inputs through one service on the test server, ours against oscar-python.

(a) ``nbplugins.services.oscar_batch.run_batch``: upload to the input bucket, one polling loop,
    outputs downloaded as each input finishes;
(b) the oscar-python loop: ``run_service(name, input=FILE, async_call=True)`` per input (``POST
    /job``), then the output bucket polled every second with boto3 until N outputs, then
    downloaded.
Both run against the same server (jobs of ``--job-seconds`` in ``--slots`` parallel slots); the
floor is what the server's own job times allow: from the first job's creation to the last
job's end. Printed: wall time, API and S3 requests, and the ratios ours / peer.
Usage: ``python benchmarks/oscar.py [--inputs 50] [--job-seconds 2] [--slots 10]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers.oscar_fixtures import start_oscar  # noqa: E402


def fdl_for(folder: Path, name: str) -> Path:
    (folder / "script.sh").write_text("#!/bin/sh\ntr a-z A-Z < $INPUT_FILE_PATH > $TMP_OUTPUT_DIR/out\n")
    path = folder / f"{name}.yml"
    path.write_text(f"functions:\n  oscar:\n  - bench:\n      name: {name}\n      image: alpine\n      cpu: '0.5'\n"
                    f"      memory: 256Mi\n      script: script.sh\n      input:\n      - storage_provider: minio.default\n"
                    f"        path: {name}/in\n      output:\n      - storage_provider: minio.default\n"
                    f"        path: {name}/out\n")
    return path


def floor(server, name: str) -> float:
    jobs = [j for j in server.jobs() if j["service"] == name]
    start = min(datetime.fromisoformat(j["creation_time"].replace("Z", "+00:00")).timestamp() for j in jobs)
    end = max(datetime.fromisoformat(j["finish_time"].replace("Z", "+00:00")).timestamp() for j in jobs)
    return end - start


def counts(server) -> tuple[int, int]:
    return server.count("/"), server.count("s3:")


def ours(server, client, name: str, files: list[str], out: Path) -> tuple[float, int]:
    from nbplugins.services import oscar_batch

    start = time.monotonic()
    items = oscar_batch.run_batch(client, name, files, str(out), progress=False, timeout=600)
    seconds = time.monotonic() - start
    return seconds, sum(i.status == "succeeded" for i in items)


def peer(server, name: str, files: list[str], out: Path) -> tuple[float, int]:
    import boto3
    from oscar_python.client import Client

    start = time.monotonic()
    client = Client({"cluster_id": "bench", "endpoint": server.url, "user": server.user,
                     "password": server.password, "ssl": False})
    minio = client.get_cluster_config().json()["minio_provider"]
    s3 = boto3.client("s3", endpoint_url=minio["endpoint"], aws_access_key_id=minio["access_key"],
                      aws_secret_access_key=minio["secret_key"], region_name="us-east-1")
    for path in files:
        client.run_service(name, input=path, async_call=True)
    keys: list[str] = []
    while len(keys) < len(files) and time.monotonic() - start < 600:
        time.sleep(1.0)
        listing = s3.list_objects_v2(Bucket=name, Prefix="out/")
        keys = [o["Key"] for o in listing.get("Contents", [])]
    out.mkdir(parents=True, exist_ok=True)
    for key in keys:
        s3.download_file(name, key, str(out / key.rsplit("/", 1)[-1]))
    return time.monotonic() - start, len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=50)
    parser.add_argument("--job-seconds", type=float, default=2.0)
    parser.add_argument("--slots", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbp-bench-oscar-"))
    server = start_oscar(work / "server", version="v4", knative=True, job_seconds=args.job_seconds,
                         slots=args.slots, pending_seconds=0.1)
    try:
        from nbplugins.services import fdl, oscar

        client = oscar.Oscar(oscar.Cluster("bench", server.url, "basic", server.user, server.password))
        inputs = work / "inputs"
        inputs.mkdir()
        files = []
        for n in range(args.inputs):
            (inputs / f"in-{n:03d}.txt").write_text(f"input number {n}\n" * 20)
            files.append(str(inputs / f"in-{n:03d}.txt"))
        rows = []
        for label, runner in (("nbplugins run_batch", "ours"), ("oscar-python loop", "peer")):
            name = f"bench-{uuid.uuid4().hex[:6]}"
            client.deploy(fdl.load(fdl_for(work, name)))
            server.reset_counts()
            if runner == "ours":
                seconds, done = ours(server, client, name, files, work / f"out-{name}")
            else:
                seconds, done = peer(server, name, files, work / f"out-{name}")
            api, s3 = counts(server)
            rows.append((label, seconds, done, api, s3, floor(server, name)))
        print(f"{args.inputs} inputs, jobs of {args.job_seconds:.1f} s, {args.slots} slots")
        print(f"{'':22} {'wall s':>8} {'done':>5} {'API req':>8} {'S3 req':>7} {'floor s':>8}")
        for label, seconds, done, api, s3, low in rows:
            print(f"{label:22} {seconds:8.1f} {done:5d} {api:8d} {s3:7d} {low:8.1f}")
        (_, s_ours, _, a_ours, s3_ours, f_ours), (_, s_peer, _, a_peer, s3_peer, f_peer) = rows
        print(f"ratio ours/peer: wall {s_ours / s_peer:.2f}, requests {(a_ours + s3_ours) / (a_peer + s3_peer):.2f}; "
              f"ours/floor {s_ours / f_ours:.2f}, peer/floor {s_peer / f_peer:.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
