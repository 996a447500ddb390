"""``nbplugins oscar deploy | ls | show | rm | run | logs`` through the real command line: what it
prints, its exit codes, one-line errors, and no password, token or key anywhere in its output."""

# ruff: noqa: F811 -- fixtures imported from oscar_fixtures are test parameters

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.servers.oscar_fixtures import oscar_factory, oscar_server  # noqa: F401
from tests.services.test_oscar import DEFAULTS, write_fdl


@pytest.fixture
def srv(oscar_server):
    oscar_server.configure(**DEFAULTS)
    oscar_server.reset_counts()
    return oscar_server


def nbp(server, *args: str, cwd: Path, oidc: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSCAR_", "OIDC_"))}
    env["OSCAR_ENDPOINT"] = server.url
    if oidc:
        env["OIDC_ACCESS_TOKEN"] = server.oidc_token
    else:
        env.update(OSCAR_USER=server.user, OSCAR_PASSWORD=server.password)
    return subprocess.run([sys.executable, "-m", "nbplugins", "oscar", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, stdin=subprocess.DEVNULL, timeout=300)


def leaks(server, *texts: str) -> list[str]:
    keys = [server.password, server.oidc_token, server.s3_keys["secret_key"],
            *(k["secret_key"] for k in server.user_keys.values())]
    return [k for k in keys if any(k in t for t in texts)]


def test_deploy_ls_show_logs_rm(srv, tmp_path):
    name = f"svc-{uuid.uuid4().hex[:8]}"
    fdl = write_fdl(tmp_path, name)
    first = nbp(srv, "deploy", str(fdl), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"created: {name}"
    assert nbp(srv, "deploy", str(fdl), cwd=tmp_path).stdout.strip() == f"unchanged: {name}"
    listing = nbp(srv, "ls", cwd=tmp_path, oidc=True)
    assert listing.returncode == 0 and name in listing.stdout
    shown = nbp(srv, "show", name, cwd=tmp_path)
    assert '"token": "***"' in shown.stdout and '"secret_key": "***"' in shown.stdout
    (tmp_path / "a.txt").write_text("abc")
    run = nbp(srv, "run", name, str(tmp_path / "a.txt"), "--async", "-o", str(tmp_path / "out"), "--no-progress",
              cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "succeeded" in run.stdout
    jobs = nbp(srv, "logs", name, cwd=tmp_path)
    assert "Succeeded" in jobs.stdout
    job = jobs.stdout.splitlines()[1].split()[0]
    assert "Uploading file 'a.out'" in nbp(srv, "logs", name, job, cwd=tmp_path).stdout
    assert nbp(srv, "rm", name, cwd=tmp_path).stdout.strip() == f"removed: {name}"
    gone = nbp(srv, "show", name, cwd=tmp_path)
    assert gone.returncode == 1 and gone.stderr.startswith("nbplugins: error:") and "no service named" in gone.stderr
    assert not leaks(srv, first.stdout, listing.stdout, shown.stdout, shown.stderr, run.stdout, run.stderr)


def test_a_synchronous_run_writes_the_decoded_answer(srv, tmp_path):
    name = f"svc-{uuid.uuid4().hex[:8]}"
    nbp(srv, "deploy", str(write_fdl(tmp_path, name)), cwd=tmp_path)
    run = nbp(srv, "run", name, "hello", "-o", "answer", "--no-progress", cwd=tmp_path, oidc=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "answer" / "output.txt").read_text() == "HELLO"
    assert (tmp_path / "answer" / "results.json").is_file()


def test_a_batch_with_a_failing_input_shows_its_logs_and_exits_1(srv, tmp_path):
    name = f"svc-{uuid.uuid4().hex[:8]}"
    nbp(srv, "deploy", str(write_fdl(tmp_path, name)), cwd=tmp_path)
    srv.configure(fail_inputs_matching="^bad")
    for n in ("one.txt", "bad.txt", "two.txt"):
        (tmp_path / n).write_text(n)
    run = nbp(srv, "run", name, "one.txt", "bad.txt", "two.txt", "--async", "-o", "out", "--no-progress",
              cwd=tmp_path, oidc=True)
    assert run.returncode == 1
    assert run.stdout.count("succeeded") == 2 and "failed" in run.stdout
    assert "Script failed on input 'bad.txt'" in run.stderr
    assert run.stderr.rstrip().splitlines()[-1].startswith("nbplugins: error: 1 of 3 inputs failed")
    assert (tmp_path / "out" / "one" / "one.out").read_text() == "ONE.TXT"
    assert not leaks(srv, run.stdout, run.stderr)


def test_a_bad_fdl_is_one_line_and_nothing_is_sent(srv, tmp_path):
    fdl = write_fdl(tmp_path, "x" * 50)
    bad = nbp(srv, "deploy", str(fdl), cwd=tmp_path)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "50 characters; OSCAR allows at most 39" in bad.stderr and "Traceback" not in bad.stderr
    assert srv.count("/") == 0


def test_a_wrong_password_is_explained_without_showing_it(srv, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSCAR_", "OIDC_"))}
    env.update(OSCAR_ENDPOINT=srv.url, OSCAR_USER="oscar", OSCAR_PASSWORD="wrong-password-canary")
    bad = subprocess.run([sys.executable, "-m", "nbplugins", "--debug", "oscar", "ls"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=120)
    assert bad.returncode == 1 and "HTTP 401" in bad.stderr and "refused user 'oscar'" in bad.stderr
    assert "wrong-password-canary" not in bad.stderr + bad.stdout
