"""Staging throughput: ours vs boto3 managed transfers, s3fs defaults and s5cmd, in one run.

A mixed set (half in one large file, half in 1 MiB files; 1 GiB by default: one 512 MiB
file and 512 files of 1 MiB) is put to and got from ``rclone serve s3`` on loopback by each
tool in turn, each in its own process so peak RSS is measured per tool (``os.wait4``).
Prints MB/s per tool and direction, our ratio to each, peak RSS, the CPU seconds the tool
and the server each spent, and the ceiling the server's own CPU sets (on a 2-core machine
rclone's MD5 work on every byte it receives, and on every object it first lists, bounds what
any client can reach). Rounds alternate the order of the tools (ABBA), and every Python tool
starts from cached bytecode (see :func:`worker_env`).

    .venv/bin/python benchmarks/staging.py [--size-mib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MiB = 1 << 20
TOOLS = ("boto3", "s3fs", "s5cmd", "nbplugins")


# ----------------------------------------------------------------------------- workers (one process each)


def _boto3_client():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                        config=Config(max_pool_connections=16, request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def worker(tool: str, direction: str, local: str, remote: str) -> None:
    """Run one transfer: ``put`` local dir -> s3://remote, or ``get`` s3://remote -> local dir."""
    bucket, _, prefix = remote.partition("/")
    if tool == "nbplugins":
        from nbplugins.storage import staging

        events = (staging.put(local, f"s3://{remote}") if direction == "put"
                  else staging.get(f"s3://{remote}", local))
        staging.consume(events, progress=False)
    elif tool == "boto3":
        from boto3.s3.transfer import TransferConfig

        client = _boto3_client()
        config = TransferConfig()
        if direction == "put":
            files = [p for p in Path(local).rglob("*") if p.is_file()]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda p: client.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(local)}",
                                                           Config=config), files))
        else:
            keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
                    for o in page.get("Contents", [])]

            def fetch(key: str) -> None:
                target = Path(local) / key[len(prefix) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(target), Config=config)

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(fetch, keys))
    elif tool == "s3fs":
        import s3fs

        # defaults, except what any client needs against a non-AWS endpoint (boto3 >= 1.36 checksums)
        fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"],
                               config_kwargs={"request_checksum_calculation": "when_required",
                                              "response_checksum_validation": "when_required"})
        if direction == "put":
            fs.put(local.rstrip("/") + "/", remote + "/", recursive=True)
        else:
            fs.get(remote + "/", local.rstrip("/") + "/", recursive=True)
    else:
        raise SystemExit(f"unknown tool {tool}")


def server_cpu(pid: int) -> float:
    """CPU seconds used so far by the S3 server process (user + system)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(tool: str, direction: str, local: str, remote: str, env: dict[str, str],
          server_pid: int) -> tuple[float, int, float, float]:
    """Seconds, peak RSS (bytes), client CPU seconds and server CPU seconds of one transfer in a child process."""
    if tool == "s5cmd":
        s5 = str(Path(sys.executable).parent / "s5cmd")
        argv = [s5, "--endpoint-url", env["AWS_ENDPOINT_URL_S3"], "cp"]
        argv += ([f"{local}/*", f"s3://{remote}/"] if direction == "put" else [f"s3://{remote}/*", f"{local}/"])
    else:
        argv = [sys.executable, __file__, "--worker", tool, direction, local, remote]
    server_before = server_cpu(server_pid)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{tool} {direction} failed: {proc.stderr.read().decode()[-2000:]}")
    return (seconds, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime,
            server_cpu(server_pid) - server_before)


# ----------------------------------------------------------------------------- driver


def make_set(root: Path, size_mib: int) -> dict[str, str]:
    root.mkdir(parents=True)
    big = size_mib // 2
    block = os.urandom(MiB)
    with open(root / "big.bin", "wb") as handle:
        for i in range(big):
            handle.write(hashlib.sha256(block + i.to_bytes(4, "big")).digest() * (MiB // 32))
    (root / "small").mkdir()
    for i in range(size_mib - big):
        (root / "small" / f"f{i:04d}.bin").write_bytes(os.urandom(MiB))
    return digest_tree(root)


def digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "_MANIFEST.json":
            h = hashlib.md5()
            with open(p, "rb") as handle:
                while chunk := handle.read(8 * MiB):
                    h.update(chunk)
            out[str(p.relative_to(root))] = h.hexdigest()
    return out


def worker_env(aws: dict[str, str], work: Path) -> dict[str, str]:
    """The environment of every tool's process, with Python's bytecode cached and warm.

    Installed packages (boto3, s3fs) carry compiled bytecode; a source checkout run with
    ``PYTHONDONTWRITEBYTECODE`` (as here) would compile nbplugins at every start instead, a
    cost no installed copy pays. Bytecode goes to a cache under the work directory, filled
    once before the first round so every round of every tool starts alike.
    """
    env = {**os.environ, **aws, "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    modules = ["argparse", "hashlib", "shutil", "subprocess", "tempfile", "concurrent.futures", "pathlib",
               "nbplugins.storage.staging.transfer", "xxhash", "tqdm", "boto3.s3.transfer", "botocore.config", "s3fs"]
    warm = f"import importlib, contextlib\nfor m in {modules!r}:\n    with contextlib.suppress(Exception): importlib.import_module(m)"
    subprocess.run([sys.executable, "-c", warm], env=env, check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="total size (half one file, half 1 MiB files)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    parser.add_argument("--workdir", default=None, help="where data goes (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every tool this many times, interleaved, and keep each tool's best run "
                             "(the machine is shared: the best run is the least disturbed one)")
    parser.add_argument("--worker", nargs=4, metavar=("TOOL", "DIR", "LOCAL", "REMOTE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    from tests.servers import s3 as s3_servers

    work = Path(args.workdir or tempfile.mkdtemp(prefix="nbp-bench-staging-"))
    data = work / "data"
    print(f"making {args.size_mib} MiB: one {args.size_mib // 2} MiB file + {args.size_mib - args.size_mib // 2} "
          f"files of 1 MiB in {work}", flush=True)
    expected = make_set(data, args.size_mib)
    server = s3_servers.start_rclone(work / "s3", buckets=("bench",), log_dir=work)
    env = worker_env(s3_servers.aws_env(server), work)
    total = args.size_mib * MiB
    tools = args.tools.split(",")
    results: dict[str, dict[str, tuple[float, int, float, float]]] = {}
    pid = server.proc.pid
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    try:
        for round_ in range(args.rounds):
            # ABBA: every other round runs the tools in reverse order, so no tool always follows
            # the same neighbour (page cache, the server's hash cache, the load left behind)
            for tool in (tools if round_ % 2 == 0 else tools[::-1]):
                remote = f"bench/{tool}-{round_}"
                out = work / f"out-{tool}"
                out.mkdir()
                put = timed(tool, "put", str(data), remote, env, pid)
                get = timed(tool, "get", str(out), remote, env, pid)
                got = digest_tree(out)
                if got != expected:
                    raise SystemExit(f"{tool}: downloaded data differ from the source ({len(got)} files)")
                best = results.setdefault(tool, {"put": put, "get": get})
                for direction, res in (("put", put), ("get", get)):
                    if res[0] < best[direction][0]:
                        best[direction] = res
                print(f"{tool:10s} put {total / put[0] / 1e6:8.1f} MB/s  get {total / get[0] / 1e6:8.1f} MB/s  "
                      f"peak RSS put {put[1] / MiB:4.0f} get {get[1] / MiB:4.0f} MiB  "
                      f"CPU s client/server put {put[2]:4.1f}/{put[3]:4.1f} get {get[2]:4.1f}/{get[3]:4.1f}",
                      flush=True)
                shutil.rmtree(out)
                shutil.rmtree(work / "s3" / "bench" / f"{tool}-{round_}", ignore_errors=True)
    finally:
        server.stop()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.rounds > 1:
        print(f"\nbest of {args.rounds} rounds:")
        for tool, res in results.items():
            print(f"{tool:10s} put {total / res['put'][0] / 1e6:8.1f} MB/s  get {total / res['get'][0] / 1e6:8.1f} MB/s  "
                  f"peak RSS put {res['put'][1] / MiB:4.0f} get {res['get'][1] / MiB:4.0f} MiB  "
                  f"CPU s client/server put {res['put'][2]:4.1f}/{res['put'][3]:4.1f} "
                  f"get {res['get'][2]:4.1f}/{res['get'][3]:4.1f}")
    if "nbplugins" in results:
        ours = results["nbplugins"]
        print("\nours / peer (MB/s ratio, >1 means we are faster):")
        for tool, res in results.items():
            if tool == "nbplugins":
                continue
            print(f"  vs {tool:8s} put {res['put'][0] / ours['put'][0]:5.2f}x   get {res['get'][0] / ours['get'][0]:5.2f}x")
        peers = [r for t, r in results.items() if t != "nbplugins"]
        if peers:
            for direction in ("put", "get"):
                fastest = min(r[direction][0] for r in peers)
                print(f"  {direction}: {fastest / ours[direction][0]:.2f}x the fastest peer")
        print(f"  our peak RSS: put {ours['put'][1] / MiB:.0f} MiB, get {ours['get'][1] / MiB:.0f} MiB")
        # What the server alone allows: its own CPU for this transfer spread over every core,
        # with a client that costs nothing. rclone hashes every byte it receives with MD5 twice
        # (gofakes3 for the ETag, the local backend as it writes) and hashes each object once more
        # on its first listing or GET: a ceiling no client can pass on this machine.
        cores = os.cpu_count() or 1
        print(f"\nCPU-bound ceilings on {cores} cores: (a) the server's CPU of our run spread over every core "
              "with a client that costs nothing; (b) server + our client CPU, perfectly overlapped:")
        for direction in ("put", "get"):
            server, client = ours[direction][3], ours[direction][2]
            alone = total / (server / cores) / 1e6 if server > 0 else float("inf")
            both = total / ((server + client) / cores) / 1e6 if server + client > 0 else float("inf")
            line = f"  {direction}: (a) {alone:7.1f} MB/s  (b) {both:7.1f} MB/s"
            if "s3fs" in results:
                line += f"   (2x s3fs would be {2 * total / results['s3fs'][direction][0] / 1e6:.1f} MB/s)"
            print(line)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
