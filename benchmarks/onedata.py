"""Onedata: nbplugins' OnedataFileSystem vs the official onedatafilerestclient, same server, same run.

Starts the HTTPS test Onezone+Oneprovider on loopback and times: upload and download of one
file, 64 KiB sequential reads, and listing a directory of 2500 entries. Loopback hides network
latency, so the ratios understate what fewer, larger and parallel requests gain on a real WAN;
the request counts printed alongside are the portable figure.

    .venv/bin/python -m benchmarks.onedata [--mib 64]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import harness  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--entries", type=int, default=2500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbp-onedata-bench-"))
    token = "MDAx" + secrets.token_urlsafe(32)
    port = harness.free_port()
    url = f"https://127.0.0.1:{port}"
    server = harness.start("onedata", [sys.executable, "-m", "tests.servers.onedata", "--port", "{port}",
                                       "--root", str(work), "--space", "bench"], port=port, url=url,
                           ready=harness.http_ready(url, verify=False), env={"ONEDATA_TEST_TOKENS": token},
                           cwd=str(ROOT))
    ca = str(work / "state" / "cert.pem")
    counts = lambda: requests.get(f"{url}/__control/counts", verify=ca, timeout=10).json()  # noqa: E731
    reset = lambda: requests.post(f"{url}/__control/reset", verify=ca, timeout=10)  # noqa: E731
    try:
        os.environ.update(ONEDATA_PROVIDER=url, ONEDATA_TOKEN=token, ONEDATA_VERIFY=ca)
        from onedatafilerestclient import OnedataFileRESTClient

        from nbplugins.storage.onedata import OnedataFileSystem

        ours = OnedataFileSystem(skip_instance_cache=True, concurrency=int(os.environ.get("BENCH_CONCURRENCY", "4")))
        official = OnedataFileRESTClient(f"127.0.0.1:{port}", token, verify_ssl=ca)
        data = os.urandom(args.mib << 20)
        local = work / "in.bin"
        local.write_bytes(data)
        rows = []

        reset()
        t_ours, _ = timed(lambda: ours.put_file(str(local), "bench/ours.bin"))
        n_ours = sum(counts().values())
        reset()

        def official_put():
            official.create_file("bench", "official.bin")
            chunk = 8 << 20
            for start in range(0, len(data), chunk):
                official.put_file_content("bench", data[start:start + chunk], offset=start, file_path="official.bin")

        t_off, _ = timed(official_put)
        n_off = sum(counts().values())
        rows.append((f"upload {args.mib} MiB", t_ours, t_off, n_ours, n_off))

        reset()
        t_ours, _ = timed(lambda: ours.get_file("bench/ours.bin", str(work / "out-ours.bin")))
        n_ours = sum(counts().values())
        reset()

        def official_get():
            with open(work / "out-official.bin", "wb") as out:
                for chunk in official.iter_file_content("bench", file_path="official.bin", chunk_size=8 << 20):
                    out.write(chunk)

        t_off, _ = timed(official_get)
        n_off = sum(counts().values())
        assert (work / "out-ours.bin").read_bytes() == data == (work / "out-official.bin").read_bytes()
        rows.append((f"download {args.mib} MiB", t_ours, t_off, n_ours, n_off))

        reset()

        def ours_seq():
            with ours.open("bench/ours.bin", "rb") as handle:
                while handle.read(64 << 10):
                    pass

        t_ours, _ = timed(ours_seq)
        n_ours = sum(counts().values())
        reset()

        def official_seq():
            for offset in range(0, len(data), 64 << 10):
                official.get_file_content("bench", offset=offset, size=64 << 10, file_path="official.bin")

        t_off, _ = timed(official_seq)
        n_off = sum(counts().values())
        rows.append(("64 KiB sequential reads", t_ours, t_off, n_ours, n_off))

        space = next((work / "spaces").iterdir())
        (space / "many").mkdir()
        for i in range(args.entries):
            (space / "many" / f"f{i:05d}").write_bytes(b"")
        reset()
        t_ours, listing = timed(lambda: ours.ls("bench/many", refresh=True))
        n_ours = sum(counts().values())
        assert len(listing) == args.entries
        reset()

        def official_ls():
            names, token_ = [], None
            while True:
                page = official.list_children("bench", file_path="many", continuation_token=token_,
                                              attributes=["name", "type", "size"])
                names += page["children"]
                if page["isLast"]:
                    return names
                token_ = page["nextPageToken"]

        t_off, listing = timed(official_ls)
        n_off = sum(counts().values())
        assert len(listing) == args.entries
        rows.append((f"list {args.entries} entries", t_ours, t_off, n_ours, n_off))

        print(f"{'operation':28} {'nbplugins':>10} {'official':>10} {'speed-up':>9} {'requests':>16}")
        for name, a, b, na, nb in rows:
            print(f"{name:28} {a:9.2f}s {b:9.2f}s {b / a:8.1f}x {na:>7} vs {nb:<7}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
