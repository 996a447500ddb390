"""OpenStack and hub API: nbplugins against the integration pages' own snippets, same servers, same run.

OpenStack (the Keystone test server with its Nova API on loopback):
(a) the EGI Notebooks snippet: the token file read by hand, keystoneauth1's ``v3.OidcAccessToken``,
    a ``Session`` and ``novaclient``; (b) ``nbplugins.openstack.session`` with the same novaclient.
Times a cold start (log in + list servers, fresh session each) and warm listings on one session,
and counts the requests Keystone saw. Then the token file rotates while the Keystone token
expires: the snippet logs in again with the token it read at the start (refused once that token
is gone), ours with the file's new one.

Hub API (a real JupyterHub on loopback): ``GET /users`` through ``nbplugins.hub.api.HubApi`` against
``requests`` with a Bearer header, as the EOSC EU Node page shows.

    .venv/bin/python benchmarks/openstack.py [--cold 20] [--warm 200] [--hub-calls 200] [--no-hub]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import harness, jupyterhub  # noqa: E402

JWT_KEY = "test-signing-key-not-a-secret-0123456789"
PROJECT = "b3c2f1e0d9a84c7b9e6f5a4d3c2b1a00"


def token(sub: str, lifetime: int = 3600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + lifetime, "iss": "https://aai.egi.eu/auth/realms/egi"},
                      JWT_KEY, algorithm="HS256")


def timed(fn: Callable[[], object], runs: int) -> float:
    """Seconds per call over ``runs`` calls."""
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs


def keystone_requests(url: str) -> int:
    counts = requests.get(f"{url}/_test/stats", timeout=5).json()["counts"]
    return sum(v for k, v in counts.items() if not k.startswith(("GET /compute", "GET /_test")))


def snippet_session(url: str, token_path: Path):  # noqa: ANN201 - what the integration page does
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    access_token = token_path.read_text().strip()
    auth = v3.OidcAccessToken(auth_url=f"{url}/v3", identity_provider="egi.eu", protocol="openid",
                              access_token=access_token, project_id=PROJECT)
    return session.Session(auth=auth)


def bench_openstack(cold: int, warm: int) -> None:
    from novaclient import client as nova_client

    from nbplugins import openstack

    work = Path(tempfile.mkdtemp(prefix="nbp-bench-os-"))
    token_path = work / "access_token"
    token_path.write_text(token("bench@egi.eu"))
    os.environ["NBPLUGINS_TOKEN_FILE"] = str(token_path)
    port = harness.free_port()
    with harness.running("keystone", [sys.executable, "-m", "tests.servers.keystone", "--port", "{port}",
                                      "--jwt-key", JWT_KEY, "--project", PROJECT], port=port, cwd=str(ROOT),
                         ready=harness.http_ready(f"http://127.0.0.1:{port}/v3"), log_dir=work) as ks:
        makers = {"snippet (keystoneauth1 + file read)": lambda: snippet_session(ks.url, token_path),
                  "nbplugins.openstack.session": lambda: openstack.session(ks.url, PROJECT, connect=False)}
        print(f"OpenStack: {cold} cold starts, {warm} warm listings of 3 servers (novaclient 2.1)\n")
        print(f"{'':38} {'cold ms':>8} {'keystone req/cold':>18} {'warm ms':>8} {'keystone req/warm':>18}")
        figures = {}
        for label, make in makers.items():
            before = keystone_requests(ks.url)
            per_cold = timed(lambda make=make: nova_client.Client("2.1", session=make()).servers.list(), cold)
            mid = keystone_requests(ks.url)
            nova = nova_client.Client("2.1", session=make())
            nova.servers.list()
            start = keystone_requests(ks.url)
            per_warm = timed(nova.servers.list, warm)
            after = keystone_requests(ks.url)
            figures[label] = (per_cold, per_warm)
            print(f"{label:38} {per_cold * 1000:>8.2f} {(mid - before) / cold:>18.1f} {per_warm * 1000:>8.2f} "
                  f"{(after - start) / warm:>18.2f}")
        (snip_cold, snip_warm), (ours_cold, ours_warm) = figures.values()
        print(f"\nratio ours / snippet: cold {ours_cold / snip_cold:.2f}x, warm {ours_warm / snip_warm:.2f}x "
              "(ours checks Keystone's version document at each log-in and re-reads the token file per request)")

        # rotation: the first token is gone (another subject's token replaces it) and Keystone's tokens expire
        outcomes = {}
        for label, make in makers.items():
            token_path.write_text(token("rotate-old@egi.eu", lifetime=2))
            nova = nova_client.Client("2.1", session=make())
            nova.servers.list()
            time.sleep(3)  # the old OIDC token expires
            token_path.write_text(token("rotate-new@egi.eu"))
            requests.post(f"{ks.url}/_test/expire", timeout=5)
            try:
                nova.servers.list()
                outcomes[label] = "listed (logged in with the new token)"
            except Exception as exc:  # noqa: BLE001 - the snippet's failure is the figure
                outcomes[label] = f"failed: {type(exc).__name__}"
        print("\nafter the token file rotated and Keystone's token expired:")
        for label, outcome in outcomes.items():
            print(f"  {label:38} {outcome}")


def bench_hub(calls: int) -> None:
    from nbplugins.hub.api import HubApi

    state = Path(tempfile.mkdtemp(prefix="nbp-bench-hub-"))
    hub = jupyterhub.start(state, state / "homes")
    try:
        api_token = str(hub.extra["service_token"])
        os.environ["OIDC_ACCESS_TOKEN"] = api_token
        os.environ.pop("NBPLUGINS_TOKEN_FILE", None)
        plain = requests.Session()
        url = f"{hub.url}hub/api/users"
        snippet = timed(lambda: plain.get(url, headers={"Authorization": f"Bearer {api_token}"}).json(), calls)
        with HubApi(hub.url) as client:
            ours = timed(client.users, calls)
        print(f"\nhub API: {calls} x GET /users on a real JupyterHub\n")
        print(f"{'requests + Bearer header (page snippet)':44} {snippet * 1000:8.2f} ms/call")
        print(f"{'nbplugins.hub.api.HubApi (token layer)':44} {ours * 1000:8.2f} ms/call")
        print(f"ratio ours / snippet: {ours / snippet:.2f}x")
    finally:
        jupyterhub.stop(hub)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=20)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--hub-calls", type=int, default=200)
    parser.add_argument("--no-hub", action="store_true")
    args = parser.parse_args()
    for name in list(os.environ):
        if name.startswith(("NBPLUGINS_", "OIDC_")):
            del os.environ[name]
    empty = Path(tempfile.mkdtemp(prefix="nbp-bench-cfg-")) / "config.toml"
    empty.write_text("")  # no developer config
    os.environ["NBPLUGINS_CONFIG"] = str(empty)
    bench_openstack(args.cold, args.warm)
    if not args.no_hub:
        bench_hub(args.hub_calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
