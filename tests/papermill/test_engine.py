"""The nbplugins papermill engine: credentials through the kernel environment, never the
notebook; scrubbed outputs on success and failure; per-run working directories."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from nbplugins import scraps, secrets
from nbplugins.errors import ExecutionError, ValidationError
from nbplugins.papermill.engine import execute
from tests.papermill import notebooks

BIN = Path(sys.executable).parent


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def papermill_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "papermill"), "--engine", "nbplugins", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=cwd, timeout=300)


def assert_clean(canaries: list[str], *texts: str) -> None:
    for canary in canaries:
        for text in texts:
            assert canary not in text


@pytest.mark.parametrize("source", ["env", "file"])
def test_papermill_cli_run_injects_credentials_and_leaks_none(tmp_path, make_jwt, source, canary):
    token = make_jwt(sub="alice", jti=canary)  # the canary is inside the JWT, and the JWT is secret
    env = {"SECRET_KEY_VAR": f"{canary}-key"}
    if source == "env":
        env["OIDC_ACCESS_TOKEN"] = token
    else:
        (tmp_path / "tok").write_text(token)
        env["NBPLUGINS_TOKEN_FILE"] = str(tmp_path / "tok")
    nb = notebooks.write(tmp_path / "in.ipynb", 'secret = ""', notebooks.LEAKY, notebooks.RAISES)
    result = papermill_cli(str(nb), "out.ipynb", "-p", "secret", "@env:SECRET_KEY_VAR", "--log-output",
                           env=env, cwd=tmp_path)
    assert result.returncode != 0  # the last cell raises, on purpose
    text = (tmp_path / "out.ipynb").read_text()
    assert_clean([token, f"{canary}-key"], text, result.stdout, result.stderr)
    out = nbformat.reads(text, as_version=4)
    values = scraps.read(out)
    assert values["token_sha"] == sha(token) and values["secret_sha"] == sha(f"{canary}-key")
    assert out.metadata.papermill.parameters == {"secret": "@env:SECRET_KEY_VAR"}
    injected = next(c for c in out.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'secret = _nbplugins_os.environ["NBPLUGINS_SECRET_SECRET"]' in injected.source
    assert "failing with ***" in text and "scrubbed" in result.stderr


def test_refresh_grant_token_stays_valid_past_its_lifetime(oidc_provider, oidc_login, tmp_path):
    _, grant = oidc_login()
    config = tmp_path / "config.toml"
    # tokens from the provider's refresh grant live 3600 s; this margin makes them "expire" within seconds
    config.write_text(f'[token]\nissuer = "{oidc_provider.url}"\nclient_id = "nbplugins"\n'
                      f'client_secret = "client-secret-value"\nrefresh_token = "{grant["refresh_token"]}"\n'
                      'refresh_margin = 3597\n')
    check = (f"import hashlib, requests\nfrom nbplugins import scraps, tokens\n"
             f"def status(t):\n    return requests.get('{oidc_provider.url}/userinfo', timeout=10, "
             f"headers={{'Authorization': 'Bearer ' + t}}).status_code\n")
    nb = notebooks.write(
        tmp_path / "long.ipynb", None,
        check + "first = tokens.current()",
        "import time\ntime.sleep(4)\nsecond = tokens.current()",
        "scraps.glue('changed', first != second)\nscraps.glue('status', [status(first), status(second)])",
    )
    os.environ["NBPLUGINS_CONFIG"] = str(config)
    try:
        out = execute(nb, tmp_path / "long.out.ipynb")
    finally:
        del os.environ["NBPLUGINS_CONFIG"]
    # the kernel read the keeper's file twice: a new token, and both accepted by the provider
    assert scraps.read(out) == {"changed": True, "status": [200, 200]}


def test_token_file_rewritten_by_the_hub_is_seen_mid_run(tmp_path, make_jwt):
    hub_file = tmp_path / "access_token"
    first, second = make_jwt(sub="first"), make_jwt(sub="second")
    hub_file.write_text(first)
    flag = tmp_path / "rewritten"
    nb = notebooks.write(
        tmp_path / "hub.ipynb", None,
        "import time, pathlib\nfrom nbplugins import scraps, tokens\n"
        "scraps.glue('a', tokens.default_resolver().get().claims.subject)",
        f"while not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.1)\n"
        "scraps.glue('b', tokens.default_resolver().get().claims.subject)",
    )
    os.environ["NBPLUGINS_TOKEN_FILE"] = str(hub_file)

    def rewrite() -> None:
        hub_file.write_text(second)
        flag.touch()

    timer = threading.Timer(3.0, rewrite)
    timer.start()
    try:
        out = execute(nb, tmp_path / "hub.out.ipynb")
    finally:
        timer.cancel()
        del os.environ["NBPLUGINS_TOKEN_FILE"]
    assert scraps.read(out) == {"a": "first", "b": "second"}


def test_concurrent_runs_each_get_their_own_working_directory(tmp_path):
    nb = notebooks.write(tmp_path / "cwd.ipynb", None, "import os\nfrom nbplugins import scraps\nscraps.glue('cwd', os.getcwd())")
    dirs = [tmp_path / "a", tmp_path / "b"]
    results: dict[str, str] = {}
    before = os.getcwd()

    def one(d: Path) -> None:
        d.mkdir()
        results[str(d)] = scraps.read(execute(nb, d / "out.ipynb", cwd=d))["cwd"]

    threads = [threading.Thread(target=one, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {str(d): str(d) for d in dirs}
    assert os.getcwd() == before


def test_unknown_parameter_is_refused_with_the_valid_names(tmp_path):
    nb = notebooks.write(tmp_path / "p.ipynb", "alpha = 1\nbeta = 'x'", "print(alpha)")
    with pytest.raises(ValidationError, match=r"unknown parameter gamma \(the parameters cell declares: alpha, beta"):
        execute(nb, tmp_path / "o.ipynb", {"gamma": 3})
    assert not (tmp_path / "o.ipynb").exists()
    out = execute(nb, tmp_path / "o.ipynb", {"gamma": 3}, allow_unknown=True)
    assert out.metadata.papermill.parameters == {"gamma": 3}


def test_failure_names_the_cell_and_saves_a_scrubbed_output(tmp_path, canary, monkeypatch):
    monkeypatch.setenv("MY_KEY", canary)
    nb = notebooks.write(tmp_path / "f.ipynb", "key = ''", "x = 1", "raise ValueError('bad key ' + key)")
    with pytest.raises(ExecutionError) as info:
        execute(nb, tmp_path / "f.out.ipynb", {"key": "@env:MY_KEY"})
    assert "raised ValueError: bad key ***" in str(info.value) and canary not in str(info.value)
    text = (tmp_path / "f.out.ipynb").read_text()
    assert canary not in text and "bad key ***" in text


def test_a_kernel_that_dies_is_reported(tmp_path):
    nb = notebooks.write(tmp_path / "die.ipynb", None, "import os\nos._exit(3)")
    with pytest.raises(ExecutionError, match="kernel died"):
        execute(nb, tmp_path / "die.out.ipynb")


def test_missing_or_malformed_notebook_is_named(tmp_path):
    with pytest.raises(ExecutionError, match="notebook not found"):
        execute(tmp_path / "nope.ipynb", tmp_path / "o.ipynb")
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(ExecutionError, match="not a valid notebook"):
        execute(bad, tmp_path / "o.ipynb")


def test_literal_at_values_are_escaped_with_a_double_at(tmp_path):
    nb = notebooks.write(tmp_path / "at.ipynb", "handle = ''", "from nbplugins import scraps\nscraps.glue('h', handle)")
    out = execute(nb, tmp_path / "at.out.ipynb", {"handle": "@@oidc"})
    assert scraps.read(out) == {"h": "@oidc"}


def test_a_save_in_the_middle_of_a_cell_holds_its_outputs_and_no_secret(tmp_path, canary, monkeypatch):
    from papermill import execute_notebook

    secrets.register(canary)
    monkeypatch.setenv("CANARY_VALUE", canary)
    cell = ("import os, time\nprint('key', os.environ['CANARY_VALUE'], flush=True)\ntime.sleep(1.3)\n"
            "print('tick', flush=True)\ntime.sleep(1.3)\nprint('tock', flush=True)\ntime.sleep(2.5)")
    nb = notebooks.write(tmp_path / "slow.ipynb", None, cell)
    out = tmp_path / "slow.out.ipynb"
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:  # every state of the output file while the notebook runs
        while not done.is_set():
            with contextlib.suppress(OSError):
                text = out.read_text()
                if not seen or text != seen[-1]:
                    seen.append(text)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:  # autosave: papermill saves during a cell once a second has passed since the last save
        result = execute_notebook(str(nb), str(out), engine_name="nbplugins", kernel_name="python3",
                                  progress_bar=False, autosave_cell_every=1)
    finally:
        done.set()
        watcher.join()
    mid_cell = []
    for text in seen:
        with contextlib.suppress(ValueError):  # a save caught half-written
            doc = json.loads(text)
            if doc["cells"][-1]["metadata"]["papermill"]["status"] == "running":
                mid_cell.append("".join("".join(o.get("text", "")) for o in doc["cells"][-1]["outputs"]))
    assert "tick" in mid_cell[-1] and "tock" in mid_cell[-1] and "key ***" in mid_cell[-1], mid_cell
    assert all(canary not in text for text in seen)
    final = "".join("".join(o.get("text", "")) for o in result.cells[-1].outputs)
    assert final == "key ***\ntick\ntock\n" and canary not in out.read_text()
