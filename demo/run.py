"""`make demo`: the whole mission on the nbplugins sandbox, end to end, on loopback only.

1. `nbplugins sandbox up --detach`: an OIDC provider (a demo user logged in for a refresh
   grant), S3, Onedata, DataMiner (WPS), an OGC API - Processes service with a UMA grant (CCP)
   and an OSCAR cluster on 127.0.0.1, sample data loaded, a private (0600) `sandbox` profile;
2. `nbplugins token check`: the token layer resolves and refreshes the token;
3. `nbplugins data put`: stage the raw measurements into S3 (verified, with a manifest);
4. `papermill --engine nbplugins` reads them from s3:// and writes its output to s3://;
5. `nbplugins pipeline run pipelines/mission.pipeline`: stage from Onedata, then a DataMiner
   process, a CCP job, an OSCAR batch and the climatology step in parallel, published to S3,
   with its HTML report;
6. `nbplugins sweep`: a small parameter sweep with its overview;
7. `nbplugins link`: an nbgitpuller link that opens the templates on EGI Notebooks;
8. `nbplugins serve`: the provisioning service creates a notebook from a template in a home,
   as openBIS's ELN asks (a dry run, then the create);
9. check that no secret reached any output.

`nbplugins sandbox down` stops everything on exit, Ctrl-C included.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
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
SERVICES = "oidc,s3,onedata,wps,processes,oscar"
# the repository a course or group publishes its templates in (set it to yours)
TEMPLATES_REPO = os.environ.get("NBPLUGINS_TEMPLATES_REPO", "https://example.org/your-group/templates.git")


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def run(argv: list[str], env: dict[str, str]) -> None:
    shown = [a.replace(str(ROOT) + "/", "") for a in argv]
    print("$ " + " ".join([Path(shown[0]).name, *shown[1:]]), flush=True)
    subprocess.run(argv, env=env, check=True, cwd=ROOT)


DEMO_USER = "nbplugins-demo"
_created_users: list[str] = []


def demo_user() -> str:
    """A system user for the provisioning step when the demo runs as root; removed at the end if made here."""
    import pwd

    try:
        pwd.getpwnam(DEMO_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", DEMO_USER],
                       check=True)
        _created_users.append(DEMO_USER)
        print(f"(running as root: created the system user {DEMO_USER} to own the provisioned notebook)")
    return DEMO_USER


def provision(homes: Path, env: dict[str, str]) -> str:
    """Start ``nbplugins serve`` (local homes, a token file), ask as the ELN does, stop it; the created path."""
    import urllib.parse
    import urllib.request

    from nbplugins.sandbox import harness

    user = getpass.getuser()
    if os.geteuid() == 0:  # the service never writes as root: the notebook goes to a throwaway user's home
        user = demo_user()
    (homes / user).mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        account = pwd.getpwnam(user)
        os.chown(homes / user, account.pw_uid, account.pw_gid)
    token = f"demo-{secrets.token_hex(16)}"
    token_file = OUT / "serve-tokens"
    token_file.write_text(f"{token} {user}\n")
    token_file.chmod(0o600)
    port = harness.free_port()
    argv = [str(BIN / "nbplugins"), "serve", "--port", str(port), "--homes", f"{homes}/{{user}}",
            "--token-file", str(token_file), "--hub-url", "https://notebooks.egi.eu"]
    print("$ nbplugins serve --port", port, "--homes", f"{homes}/{{user}}", "--token-file", token_file.name)
    server = harness.start("serve", argv, port=port, ready=harness.http_ready(f"http://127.0.0.1:{port}/health"),
                           env=env, log_dir=OUT)
    try:
        query = {"token": token, "folder": "eln/experiment-42", "filename": "climatology.ipynb",
                 "template": "climatology", "p.baseline_start": "2001", "p.baseline_end": "2002"}
        for test in ("True", "False"):
            url = f"http://127.0.0.1:{port}/jupyter-openbis-integration-service?" + urllib.parse.urlencode(
                {**query, "test": test})
            with urllib.request.urlopen(urllib.request.Request(url, data=b"TEST", method="POST"), timeout=30) as answer:
                body = json.loads(answer.read())
            print(f"POST ...&test={test} -> {body['fileName']} at {body['path']}")
        return str(body["path"])
    finally:
        server.stop()


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    sandbox_dir = Path(tempfile.mkdtemp(prefix="nbp-demo-sandbox-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OIDC_", "NBPLUGINS_", "AWS_", "ONEDATA_"))}
    env.update(MPLBACKEND="Agg")
    try:
        step("the sandbox on 127.0.0.1: OIDC, S3, Onedata, DataMiner, OGC API - Processes (UMA), OSCAR")
        run([str(BIN / "nbplugins"), "sandbox", "up", "--detach", "--dir", str(sandbox_dir), "--services", SERVICES], env)
        config_file = sandbox_dir / "config.toml"
        settings = tomllib.loads(config_file.read_text())
        print(f"config: {config_file} (mode {oct(config_file.stat().st_mode & 0o777)}): refresh grant, S3, Onedata, "
              "D4Science, processes, OSCAR")
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

        step("the mission pipeline: Onedata in; DataMiner, CCP, OSCAR and a science step in parallel; S3 out")
        run_dir = OUT / "mission"
        run([str(BIN / "nbplugins"), "pipeline", "run", "pipelines/mission.pipeline", "-j", "3",
             "--run-dir", str(run_dir)], env)

        step("a parameter sweep in forked kernels")
        grid = OUT / "grid.yaml"
        grid.write_text("drift: [0.0, 0.25, 0.5]\nseed: [1, 2]\nsteps: 2000\n")
        run([str(BIN / "nbplugins"), "sweep", "templates/random_walk.ipynb", "--grid", str(grid),
             "-o", str(OUT / "sweep" / "walk-{drift}-{seed}.ipynb"), "--report-dir", str(OUT / "sweep-report")], env)

        step("an nbgitpuller link that opens the templates in a user's EGI Notebooks home")
        run([str(BIN / "nbplugins"), "link", TEMPLATES_REPO, "--hub", "egi", "--open", "templates/climatology.ipynb",
             "--qr", str(OUT / "link.png")], env)

        step("the provisioning service: a notebook from a template, created in a home as openBIS's ELN asks")
        created = provision(OUT / "homes", env)
        print(f"created: {created}")

        step("checking every output for secrets")
        from nbplugins.storage import filesystem

        os.environ.update(NBPLUGINS_CONFIG=str(config_file))
        fs, _ = filesystem(f"s3://{BUCKET}")
        results = fs.find(f"{BUCKET}/results")
        remote = "".join(fs.cat(p).decode("latin-1") for p in results)
        local = "".join(p.read_bytes().decode("latin-1") for p in OUT.rglob("*") if p.is_file())
        values = [settings["token"]["refresh_token"], settings["token"]["client_secret"],
                  settings["s3"]["sandbox"]["secret_access_key"], settings["onedata"]["token"],
                  settings["d4science"]["token"], settings["oscar"]["clusters"]["sandbox"]["password"]]
        leaked = [v for v in values if v in remote or v in local]
        print(f"S3 results:      {', '.join(sorted(p.split('/', 2)[2] for p in results))}")
        print(f"pipeline report: {run_dir / 'report.html'}")
        print(f"provisioned:     {created}")
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
        for user in _created_users:
            subprocess.run(["userdel", user], check=False)
        stopped = subprocess.run([str(BIN / "nbplugins"), "sandbox", "down", "--dir", str(sandbox_dir)], env=env,
                                 cwd=ROOT, check=False)
        if stopped.returncode == 0:
            shutil.rmtree(sandbox_dir, ignore_errors=True)
        else:
            print(f"could not stop the sandbox: see {sandbox_dir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
