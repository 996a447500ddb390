"""`make demo`: the main job on the embedded local stack, end to end, on loopback only.

1. start a real OIDC provider and an S3 server (`rclone serve s3`) on 127.0.0.1, and log a
   demo user in (as a browser would) for a refresh token;
2. write a private (0600) nbplugins config: the refresh grant and an S3 profile;
3. `nbplugins token check`: the token layer resolves and refreshes the token;
4. `nbplugins data put`: stage the raw measurements into S3 (verified, with a manifest);
5. `papermill --engine nbplugins` reads them from s3:// and writes its output to s3://;
6. `nbplugins pipeline run`: the flagship pipeline (prepare -> summary + correlations in
   parallel -> report), with its HTML report; results published back to S3;
7. `nbplugins sweep`: a small parameter sweep with its overview;
8. check that no secret reached any output.

Everything started here is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import harness, oidc, s3  # noqa: E402

OUT = ROOT / "demo-out"
BIN = Path(sys.executable).parent


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def run(argv: list[str], env: dict[str, str]) -> None:
    shown = [a.replace(str(ROOT) + "/", "") for a in argv]
    print("$ " + " ".join([Path(shown[0]).name, *shown[1:]]), flush=True)
    subprocess.run(argv, env=env, check=True, cwd=ROOT)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    logs = tempfile.mkdtemp(prefix="nbp-demo-")
    servers: list[harness.ServerProcess] = []
    try:
        step("starting the local stack on 127.0.0.1: OIDC provider and S3 (rclone serve s3)")
        provider = oidc.start_provider(token_max_age=120, log_dir=logs)
        servers.append(provider)
        store = s3.start_rclone(Path(logs) / "s3", buckets=("demo",), log_dir=logs)
        servers.append(store)
        print(f"issuer: {provider.url}\nS3:     {store.url} (bucket demo)")

        grant = oidc.login(provider.url, "alice@egi.eu")
        config_file = OUT / "config.toml"
        from nbplugins.files import write_atomic

        write_atomic(config_file, "\n".join([
            "[token]",
            f'issuer = "{provider.url}"',
            'client_id = "nbplugins"',
            'client_secret = "client-secret-value"',
            f'refresh_token = "{grant["refresh_token"]}"',
            "",
            "[s3.default]",
            f'endpoint_url = "{store.url}"',
            f'access_key_id = "{store.extra["access_key"]}"',
            f'secret_access_key = "{store.extra["secret_key"]}"',
            "",
        ]))
        print(f"config: {config_file} (mode {oct(config_file.stat().st_mode & 0o777)}): refresh grant + S3 profile")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OIDC_", "NBPLUGINS_", "AWS_"))}
        env.update(NBPLUGINS_CONFIG=str(config_file), MPLBACKEND="Agg")

        step("the token, through the token layer")
        run([str(BIN / "nbplugins"), "token", "check"], env)

        step("staging the raw data into S3")
        run([str(BIN / "nbplugins"), "data", "put", "templates/data", "s3://demo/raw"], env)

        step("papermill with the nbplugins engine: s3:// in, s3:// out")
        run([str(BIN / "papermill"), "--engine", "nbplugins", "--no-progress-bar",
             "templates/summarize_table.ipynb", "s3://demo/results/summarize_table.ipynb",
             "-p", "input_path", "s3://demo/raw/measurements.csv",
             "-p", "output_path", "s3://demo/results/summary.csv"], env)

        step("the flagship pipeline, independent nodes in parallel")
        run_dir = OUT / "flagship"
        run([str(BIN / "nbplugins"), "pipeline", "run", "pipelines/flagship.pipeline", "-j", "2",
             "--run-dir", str(run_dir), "--param", "min_humidity=40"], env)
        run([str(BIN / "nbplugins"), "data", "put", str(run_dir / "nodes" / "report"), "s3://demo/results/report"], env)

        step("a parameter sweep in forked kernels")
        grid = OUT / "grid.yaml"
        grid.write_text("drift: [0.0, 0.25, 0.5]\nseed: [1, 2]\nsteps: 2000\n")
        run([str(BIN / "nbplugins"), "sweep", "templates/random_walk.ipynb", "--grid", str(grid),
             "-o", str(OUT / "sweep" / "walk-{drift}-{seed}.ipynb"), "--report-dir", str(OUT / "sweep-report")], env)

        step("checking every output for secrets")
        from nbplugins.storage import filesystem

        os.environ.update(NBPLUGINS_CONFIG=str(config_file))
        fs, _ = filesystem("s3://demo")
        remote = "".join(fs.cat(p).decode("latin-1") for p in fs.find("demo/results"))
        local = "".join(p.read_bytes().decode("latin-1") for p in OUT.rglob("*") if p.is_file() and p != config_file)
        values = [grant["refresh_token"], "client-secret-value", str(store.extra["secret_key"])]
        leaked = [v for v in values if v in remote or v in local]
        print(f"S3 results:      {', '.join(sorted(p.split('/', 2)[2] for p in fs.find('demo/results')))}")
        print(f"pipeline report: {run_dir / 'report.html'}")
        print(f"sweep report:    {OUT / 'sweep-report' / 'index.html'}")
        print(f"secrets in outputs: {'LEAKED' if leaked else 'none'}")
        return 1 if leaked else 0
    except subprocess.CalledProcessError as exc:
        print(f"\ndemo step failed (exit {exc.returncode}): {' '.join(map(str, exc.cmd[:3]))} ...", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the local stack", file=sys.stderr)
        return 130
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
