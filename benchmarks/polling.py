"""Waiting for a DataMiner job: ours against owslib's ``monitorExecution`` on one PyWPS server.

(a) Completion: the same SLEEP jobs (``--seconds``, ``--reps`` each) run once through ours
    (:class:`nbplugins.services.dataminer.DataMiner` submit + :func:`nbplugins.services.jobs.wait`)
    and once through owslib (``execute(..., output=[(ND, True)])`` + ``monitorExecution(execution,
    sleepSecs=5)``, its documented use). Per job: the time from the server finishing (the last
    write of its status document) to the client knowing it, the status requests sent (counted at
    the server) and the client's CPU time.
(b) A failing status URL: the status documents answer 500, or the connection is closed without
    an answer, for ``--fault-seconds``; each client waits on a job meanwhile, in a thread (owslib's
    loop has no timeout, so the run is bounded by the window), and the status requests per second
    it sent in the window are counted at the server.
The clients run one after the other so the server's counts are each one's own. Ratios are
owslib over ours. Usage: ``python benchmarks/polling.py [--seconds 3,8] [--reps 2] [--fault-seconds 30]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import wps  # noqa: E402

ND = "non_deterministic_output"


@dataclass
class Figures:
    """One client's figures for scenario (a)."""

    label: str
    latency: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def row(self) -> str:
        return (f"{self.label:<28} {statistics.fmean(self.latency):8.2f} {max(self.latency):8.2f} "
                f"{statistics.fmean(self.requests):9.1f} {statistics.fmean(self.cpu):9.3f}")


def finished_at(server_dir: Path, status_url: str) -> float:
    """When the server wrote the job's final status document (its mtime, wall clock)."""
    return (server_dir / "outputs" / status_url.rsplit("/", 1)[-1]).stat().st_mtime


def ours_client(server: wps.WpsServer):
    from nbplugins.services.dataminer import DataMiner

    return DataMiner(server.url, server.token)


def owslib_client(server: wps.WpsServer):
    from owslib.wps import WebProcessingService

    return WebProcessingService(server.url, headers={"gcube-token": server.token}, skip_caps=True)


def run_ours(server: wps.WpsServer, server_dir: Path, seconds: float, figures: Figures) -> None:
    client = ours_client(server)
    try:
        job = client.submit(wps.SLEEP, {"Seconds": seconds})
        server.reset_counts()
        cpu = time.process_time()
        client.wait(job, progress=False, timeout=seconds * 10 + 60)
        known = time.time()
        figures.cpu.append(time.process_time() - cpu)
        figures.latency.append(known - finished_at(server_dir, job.status_url))
        figures.requests.append(server.count("status"))
    finally:
        client.close()


def run_owslib(server: wps.WpsServer, server_dir: Path, seconds: float, figures: Figures) -> None:
    from owslib.wps import monitorExecution

    execution = owslib_client(server).execute(wps.SLEEP, [("Seconds", str(seconds))], output=[(ND, True)])
    server.reset_counts()
    cpu = time.process_time()
    monitorExecution(execution, sleepSecs=5)
    known = time.time()
    figures.cpu.append(time.process_time() - cpu)
    figures.latency.append(known - finished_at(server_dir, execution.statusLocation))
    figures.requests.append(server.count("status"))
    assert execution.status == "ProcessSucceeded", execution.status


def under_fault(server: wps.WpsServer, mode: str, window: float, label: str) -> tuple[float, float, bool]:
    """Status requests per second and client CPU seconds while the status URL fails; did it end in time."""
    from owslib.wps import monitorExecution

    if label == "ours":
        client = ours_client(server)
        job = client.submit(wps.SLEEP, {"Seconds": 0.2})

        def wait() -> None:
            try:
                client.wait(job, progress=False, timeout=window * 4)
            except Exception as exc:  # the figure is the request rate; the outcome is printed
                print(f"  ours ended with {type(exc).__name__}: {exc}", file=sys.stderr)
    else:
        execution = owslib_client(server).execute(wps.SLEEP, [("Seconds", "0.2")], output=[(ND, True)])

        def wait() -> None:
            monitorExecution(execution, sleepSecs=5)

    time.sleep(1.0)  # the job is over before the fault starts: only the status URL is in the way
    server.status_fault(mode, window)
    server.reset_counts()
    cpu = time.process_time()
    thread = threading.Thread(target=wait, daemon=True, name=f"wait-{label}")
    start = time.monotonic()
    thread.start()
    time.sleep(window)
    sent = server.count("status")
    rate = sent / (time.monotonic() - start)
    used = time.process_time() - cpu
    server.clear_fault()
    thread.join(timeout=window + 30)
    if label == "ours":
        client.close()
    return rate, used, not thread.is_alive()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="3,8", help="SLEEP durations, comma-separated")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--fault-seconds", type=float, default=30.0)
    args = parser.parse_args()
    logging.getLogger("owslib").setLevel(logging.CRITICAL)  # its loop logs an error per failed request
    durations = [float(s) for s in args.seconds.split(",") if s.strip()]

    with tempfile.TemporaryDirectory(prefix="nbp-polling-") as tmp:
        server_dir = Path(tmp) / "wps"
        server = wps.start(server_dir, log_dir=Path(tmp))
        try:
            ours, peer = Figures("ours (jobs.wait)"), Figures("owslib monitorExecution(5)")
            for seconds in durations:
                for _ in range(args.reps):
                    run_ours(server, server_dir, seconds, ours)
                    run_owslib(server, server_dir, seconds, peer)
            print(f"\n(a) SLEEP jobs of {args.seconds} s, {args.reps} each, on PyWPS {server.url}")
            print(f"{'client':<28} {'lat avg':>8} {'lat max':>8} {'requests':>9} {'cpu s':>9}")
            print(ours.row())
            print(peer.row())
            print(f"ratios owslib/ours: latency {statistics.fmean(peer.latency) / statistics.fmean(ours.latency):.2f}x, "
                  f"requests {statistics.fmean(peer.requests) / statistics.fmean(ours.requests):.2f}x, "
                  f"cpu {statistics.fmean(peer.cpu) / max(statistics.fmean(ours.cpu), 1e-6):.2f}x")

            print(f"\n(b) status URL failing for {args.fault_seconds:.0f} s")
            print(f"{'mode':<8} {'client':<8} {'req/s':>9} {'cpu s':>8}  ended")
            for mode in ("500", "refuse"):
                figures = {}
                for label in ("ours", "owslib"):
                    figures[label] = under_fault(server, mode, args.fault_seconds, label)
                    rate, used, ended = figures[label]
                    print(f"{mode:<8} {label:<8} {rate:9.2f} {used:8.2f}  {'yes' if ended else 'no'}")
                ratio = figures["owslib"][0] / max(figures["ours"][0], 1e-9)
                print(f"{mode:<8} ratio owslib/ours: {ratio:.0f}x requests per second")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
