"""`make demo`: the main job on the embedded local stack, end to end, on loopback only.

1. start a real OIDC provider and log a demo user in (as a browser would) for a refresh token;
2. write a private (0600) nbplugins config holding the refresh grant;
3. show `nbplugins token check` resolving the token through the token layer;
4. execute the `summarize_table` template with papermill, the kernel getting the token
   from the config, never as a parameter, and check the output holds no secret.

Everything started here is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import harness, oidc  # noqa: E402

OUT = ROOT / "demo-out"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def run(argv: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(argv), flush=True)
    subprocess.run(argv, env=env, check=True)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    bindir = Path(sys.executable).parent
    servers: list[harness.ServerProcess] = []
    try:
        step("starting the local OIDC provider (oidc-provider-mock) on 127.0.0.1")
        provider = oidc.start_provider(token_max_age=120, log_dir=tempfile.mkdtemp(prefix="nbp-demo-"))
        servers.append(provider)
        print(f"issuer: {provider.url}")

        step("logging the demo user in to obtain a refresh token")
        grant = oidc.login(provider.url, "alice@egi.eu")
        config_file = OUT / "config.toml"
        from nbplugins.secrets import write_private

        write_private(config_file, "\n".join([
            "[token]",
            f'issuer = "{provider.url}"',
            'client_id = "nbplugins"',
            'client_secret = "client-secret-value"',
            f'refresh_token = "{grant["refresh_token"]}"',
            "",
        ]))
        print(f"wrote {config_file} (mode {oct(config_file.stat().st_mode & 0o777)})")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OIDC_", "NBPLUGINS_"))}
        env["NBPLUGINS_CONFIG"] = str(config_file)

        step("nbplugins token check")
        run([str(bindir / "nbplugins"), "token", "check"], env)

        step("executing templates/summarize_table.ipynb with papermill")
        output = OUT / "summarize_table.out.ipynb"
        run([str(bindir / "papermill"), str(ROOT / "templates/summarize_table.ipynb"), str(output),
             "--cwd", str(ROOT / "templates"),
             "-p", "input_path", str(ROOT / "templates/data/measurements.csv"),
             "-p", "output_path", str(OUT / "summary.csv")], env)
        text = output.read_text()
        leaked = grant["refresh_token"] in text or grant["access_token"] in text
        print(f"output: {output}\nsummary: {OUT / 'summary.csv'}\nsecrets in output: {'YES' if leaked else 'none'}")
        return 1 if leaked else 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
