"""`make demo`: the main job on the nbplugins sandbox, end to end, on loopback only.

1. `nbplugins sandbox up --detach`: a real OIDC provider (a demo user logged in for a refresh
   grant), S3 (`rclone serve s3`) and Onedata on 127.0.0.1, the sample data loaded, and a
   private (0600) config with the `sandbox` profile;
2. `nbplugins token check`: the token layer resolves and refreshes the token;
3. `nbplugins data put`: stage the raw measurements into S3 (verified, with a manifest);
4. `papermill --engine nbplugins` reads them from s3:// and writes its output to s3://;
5. `nbplugins pipeline run`: the flagship pipeline (prepare -> summary + correlations in
   parallel -> report), with its HTML report; results published back to S3;
6. `nbplugins sweep`: a small parameter sweep with its overview;
7. check that no secret reached any output.

`nbplugins sandbox down` stops everything on exit, Ctrl-C included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
BIN = Path(sys.executable).parent
BUCKET = "sandbox"  # the sandbox's bucket


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def run(argv: list[str], env: dict[str, str]) -> None:
    shown = [a.replace(str(ROOT) + "/", "") for a in argv]
    print("$ " + " ".join([Path(shown[0]).name, *shown[1:]]), flush=True)
    subprocess.run(argv, env=env, check=True, cwd=ROOT)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    sandbox_dir = Path(tempfile.mkdtemp(prefix="nbp-demo-sandbox-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OIDC_", "NBPLUGINS_", "AWS_", "ONEDATA_"))}
    env.update(MPLBACKEND="Agg")
    try:
        step("the sandbox on 127.0.0.1: OIDC provider, S3 (rclone serve s3) and Onedata, sample data loaded")
        run([str(BIN / "nbplugins"), "sandbox", "up", "--detach", "--dir", str(sandbox_dir)], env)
        config_file = sandbox_dir / "config.toml"
        settings = tomllib.loads(config_file.read_text())
        print(f"config: {config_file} (mode {oct(config_file.stat().st_mode & 0o777)}): refresh grant + S3 + Onedata")
        env.update(NBPLUGINS_CONFIG=str(config_file))

        step("the token, through the token layer")
        run([str(BIN / "nbplugins"), "token", "check"], env)

        step("staging the raw data into S3")
        run([str(BIN / "nbplugins"), "data", "put", "templates/data", f"s3://{BUCKET}/raw"], env)

        step("papermill with the nbplugins engine: s3:// in, s3:// out")
        run([str(BIN / "papermill"), "--engine", "nbplugins", "--no-progress-bar",
             "templates/summarize_table.ipynb", f"s3://{BUCKET}/results/summarize_table.ipynb",
             "-p", "input_path", f"s3://{BUCKET}/raw/measurements.csv",
             "-p", "output_path", f"s3://{BUCKET}/results/summary.csv"], env)

        step("the flagship pipeline, independent nodes in parallel")
        run_dir = OUT / "flagship"
        run([str(BIN / "nbplugins"), "pipeline", "run", "pipelines/flagship.pipeline", "-j", "2",
             "--run-dir", str(run_dir), "--param", "min_humidity=40"], env)
        run([str(BIN / "nbplugins"), "data", "put", str(run_dir / "nodes" / "report"), f"s3://{BUCKET}/results/report"], env)

        step("a parameter sweep in forked kernels")
        grid = OUT / "grid.yaml"
        grid.write_text("drift: [0.0, 0.25, 0.5]\nseed: [1, 2]\nsteps: 2000\n")
        run([str(BIN / "nbplugins"), "sweep", "templates/random_walk.ipynb", "--grid", str(grid),
             "-o", str(OUT / "sweep" / "walk-{drift}-{seed}.ipynb"), "--report-dir", str(OUT / "sweep-report")], env)

        step("checking every output for secrets")
        from nbplugins.storage import filesystem

        os.environ.update(NBPLUGINS_CONFIG=str(config_file))
        fs, _ = filesystem(f"s3://{BUCKET}")
        results = fs.find(f"{BUCKET}/results")
        remote = "".join(fs.cat(p).decode("latin-1") for p in results)
        local = "".join(p.read_bytes().decode("latin-1") for p in OUT.rglob("*") if p.is_file())
        values = [settings["token"]["refresh_token"], settings["token"]["client_secret"],
                  settings["s3"]["sandbox"]["secret_access_key"], settings["onedata"]["token"]]
        leaked = [v for v in values if v in remote or v in local]
        print(f"S3 results:      {', '.join(sorted(p.split('/', 2)[2] for p in results))}")
        print(f"pipeline report: {run_dir / 'report.html'}")
        print(f"sweep report:    {OUT / 'sweep-report' / 'index.html'}")
        print(f"secrets in outputs: {'LEAKED' if leaked else 'none'}")
        return 1 if leaked else 0
    except subprocess.CalledProcessError as exc:
        print(f"\ndemo step failed (exit {exc.returncode}): {' '.join(map(str, exc.cmd[:3]))} ...", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the sandbox", file=sys.stderr)
        return 130
    finally:
        stopped = subprocess.run([str(BIN / "nbplugins"), "sandbox", "down", "--dir", str(sandbox_dir)], env=env,
                                 cwd=ROOT, check=False)
        if stopped.returncode == 0:
            shutil.rmtree(sandbox_dir, ignore_errors=True)
        else:
            print(f"could not stop the sandbox: see {sandbox_dir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
