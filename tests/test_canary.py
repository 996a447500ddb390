"""Canary values in every token source and as S3 keys must reach the kernels and nothing else:
no output notebook, log record, exception text, summary table or report."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbplugins import scraps
from nbplugins.errors import ExecutionError
from tests.papermill import notebooks

ROOT = Path(__file__).resolve().parent.parent
SHOUT = ("import os\nfrom nbplugins import scraps, tokens\nt = tokens.current()\n"
         "print('token', t, os.environ.get('OIDC_ACCESS_TOKEN'), os.environ.get('AWS_SECRET_ACCESS_KEY'),\n"
         "      os.environ.get('AWS_ACCESS_KEY_ID'))\n"
         "scraps.glue('token', t)\nscraps.glue('token_len', len(t))\nt")
FAIL = "raise RuntimeError('leaking ' + tokens.current() + os.environ['AWS_SECRET_ACCESS_KEY'])"


def every_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def s3_canaries(monkeypatch, canary):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", f"AKID{canary}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", f"SECRET{canary}")
    return [f"AKID{canary}", f"SECRET{canary}"]


def token_source(kind: str, tmp_path: Path, monkeypatch, make_jwt, canary: str, oidc_provider, oidc_login) -> list[str]:
    """Configure one token source with canary values; return the values that must not leak."""
    if kind == "env":
        value = make_jwt(jti=canary)
        monkeypatch.setenv("OIDC_ACCESS_TOKEN", value)
        return [value]
    if kind == "file":
        value = make_jwt(jti=canary)
        (tmp_path / "tok").write_text(value)
        monkeypatch.setenv("NBPLUGINS_TOKEN_FILE", str(tmp_path / "tok"))
        return [value]
    _, grant = oidc_login()
    config = tmp_path / "config.toml"
    config.write_text(f'[token]\nissuer = "{oidc_provider.url}"\nclient_id = "nbplugins"\n'
                      f'client_secret = "client-secret-value"\nrefresh_token = "{grant["refresh_token"]}"\n')
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(config))
    from nbplugins import tokens

    return [grant["refresh_token"], "client-secret-value", tokens.current()]


@pytest.mark.parametrize("kind", ["env", "file", "refresh"])
def test_canaries_reach_the_kernel_and_nothing_else(kind, tmp_path, monkeypatch, make_jwt, canary, s3_canaries,
                                                    oidc_provider, oidc_login, caplog):
    secrets_ = token_source(kind, tmp_path, monkeypatch, make_jwt, canary, oidc_provider, oidc_login) + s3_canaries
    out = tmp_path / "out"
    out.mkdir()
    shout = notebooks.write(tmp_path / "shout.ipynb", None, SHOUT)
    fail = notebooks.write(tmp_path / "fail.ipynb", None, SHOUT, FAIL)
    from nbplugins.papermill.engine import execute

    with caplog.at_level(logging.DEBUG):
        nb = execute(shout, out / "shout.ipynb", log_output=True)
        with pytest.raises(ExecutionError) as info:
            execute(fail, out / "fail.ipynb", log_output=True)
        execute(ROOT / "templates" / "summarize_table.ipynb", out / "summary.ipynb",
                {"input_path": str(ROOT / "templates/data/measurements.csv"), "output_path": str(out / "s.csv")})
    assert scraps.read(nb)["token_len"] > 10 and scraps.read(nb)["token"] == "***"
    (tmp_path / "grid.yaml").write_text("drift: [0.0, 0.5]\nsteps: 50\n")
    sweep = subprocess.run([sys.executable, "-m", "nbplugins", "-v", "sweep", str(ROOT / "templates/random_walk.ipynb"),
                            "--grid", str(tmp_path / "grid.yaml"), "-o", str(out / "walk-{drift}.ipynb"),
                            "--report-dir", str(out / "report")], capture_output=True, text=True,
                           env=dict(os.environ), timeout=300)
    assert sweep.returncode == 0, sweep.stderr
    haystack = "\n".join([every_text(out), caplog.text, str(info.value), sweep.stdout, sweep.stderr])
    for value in secrets_:
        assert value not in haystack
    assert "leaking ***" in str(info.value)
