"""`nbplugins sandbox up/status/down` as a user runs them: real processes, real servers, real PIDs."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.sandbox.helpers import (
    clean_env,
    force_down,
    nbp,
    none_alive,
    processes_under,
    read_state,
    recorded_pids,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "templates" / "data"


def secret_values(directory: Path) -> list[str]:
    cfg = tomllib.loads((directory / "config.toml").read_text())
    return [cfg["token"]["client_secret"], cfg["token"]["refresh_token"], cfg["s3"]["sandbox"]["secret_access_key"],
            cfg["onedata"]["token"]]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A detached sandbox with the storage services, shared by the read-only tests; always stopped.
    The compute services (wps, processes, oscar, keystone): tests/sandbox/test_compute_services.py."""
    base = tmp_path_factory.mktemp("sandbox-cli")
    directory, env = base / "sb", clean_env(base / "home")
    started = nbp("sandbox", "up", "--detach", "--dir", str(directory), "--services", "oidc,s3,onedata", env=env)
    try:
        assert started.returncode == 0, started.stderr
        yield directory, env, started
    finally:
        nbp("sandbox", "down", "--dir", str(directory), env=env)
        force_down(directory)


def test_up_prints_how_to_use_it_and_writes_a_private_config(running):
    directory, _env, started = running
    assert f"export NBPLUGINS_CONFIG={directory / 'config.toml'}" in started.stdout
    for url in ("s3://sandbox/data/measurements.csv", "onedata://sandbox/data/temperature.nc"):
        assert url in started.stdout
    assert (directory / "config.toml").stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o777 == 0o700
    assert all(log.stat().st_mode & 0o777 == 0o600 for log in (directory / "logs").iterdir())


def test_the_profile_works_for_the_token_and_the_data(running, tmp_path):
    directory, env, _ = running
    env = {**env, "NBPLUGINS_CONFIG": str(directory / "config.toml")}
    check = nbp("token", "check", env=env)
    assert check.returncode == 0, check.stderr
    assert "alice@egi.eu" in check.stdout and "vo.nbplugins.eu" in check.stdout
    for url, name in (("s3://sandbox/data/measurements.csv", "measurements.csv"),
                      ("onedata://sandbox/data/temperature.nc", "temperature.nc")):
        got = nbp("data", "get", url, f"{tmp_path}/", env=env)
        assert got.returncode == 0, got.stderr
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes()


def test_status_lists_what_runs_where_and_proves_each_service_faithful(running):
    directory, env, _ = running
    shown = nbp("sandbox", "status", "--dir", str(directory), "--check", env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    state = read_state(directory)
    for name, entry in state["services"].items():
        assert any(line.split()[:4] == [name, "running", "pid", str(entry["pid"])] for line in shown.stdout.splitlines())
        assert entry["url"] in shown.stdout
        assert f"check {name}" in shown.stdout
    assert sorted(state["services"]) == ["oidc", "onedata", "s3"]
    assert "FAILED" not in shown.stdout


def test_up_twice_says_it_runs_and_where(running):
    directory, env, _ = running
    before = read_state(directory)
    again = nbp("sandbox", "up", "--detach", "--dir", str(directory), env=env)
    assert again.returncode == 1
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    assert "already running" in again.stderr and before["services"]["s3"]["url"] in again.stderr
    assert read_state(directory)["services"] == before["services"]


def test_no_secret_reaches_an_output_or_the_state_file(running):
    directory, env, started = running
    status = nbp("sandbox", "status", "--dir", str(directory), "--check", env=env)
    texts = [started.stdout, started.stderr, status.stdout, status.stderr, (directory / "sandbox.json").read_text()]
    for value in secret_values(directory):
        assert not any(value in text for text in texts)


def test_down_with_nothing_running_says_so(tmp_path):
    env = clean_env(tmp_path / "home")
    down = nbp("sandbox", "down", "--dir", str(tmp_path / "none"), env=env)
    assert down.returncode == 0 and "nothing running" in down.stdout
    status = nbp("sandbox", "status", env=env)  # the default folder, under XDG_STATE_HOME
    assert status.returncode == 0 and "no sandbox has run" in status.stdout and "nbplugins sandbox up" in status.stdout


def test_an_unknown_service_is_refused_before_anything_starts(tmp_path):
    env = clean_env(tmp_path / "home")
    refused = nbp("sandbox", "up", "--dir", str(tmp_path / "sb"), "--services", "s3,nope", env=env)
    assert refused.returncode == 1
    assert "unknown sandbox service 'nope'" in refused.stderr and "s3" in refused.stderr
    assert not (tmp_path / "sb").exists()


def test_down_stops_everything_and_up_again_takes_another_port_when_the_old_one_is_taken(tmp_path):
    directory, env = tmp_path / "sb", clean_env(tmp_path / "home")
    try:
        assert nbp("sandbox", "up", "--detach", "--dir", str(directory), "--services", "s3,oidc", env=env).returncode == 0
        first = read_state(directory)
        down = nbp("sandbox", "down", "--dir", str(directory), env=env)
        assert down.returncode == 0 and "oidc, s3" in down.stdout
        assert none_alive(recorded_pids(first)) and not processes_under(directory)
        assert "not running" in nbp("sandbox", "status", "--dir", str(directory), env=env).stdout
        refused = nbp("data", "get", "s3://sandbox/data/measurements.csv", f"{tmp_path}/",
                      env={**env, "NBPLUGINS_CONFIG": str(directory / "config.toml")})
        assert refused.returncode != 0  # at once, not after the retry deadline: the sandbox is named
        assert "'sandbox' profile" in refused.stderr and "nbplugins sandbox up" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", first["services"]["s3"]["port"]))
            squatter.listen()
            again = nbp("sandbox", "up", "--detach", "--dir", str(directory), "--services", "s3,oidc", env=env)
            assert again.returncode == 0, again.stderr
            second = read_state(directory)
            assert second["services"]["s3"]["port"] != first["services"]["s3"]["port"]
            assert second["services"]["oidc"]["port"] == first["services"]["oidc"]["port"]  # kept when free
            got = nbp("data", "get", "s3://sandbox/data/measurements.csv", f"{tmp_path}/",
                      env={**env, "NBPLUGINS_CONFIG": str(directory / "config.toml")})
            assert got.returncode == 0, got.stderr
    finally:
        nbp("sandbox", "down", "--dir", str(directory), env=env)
        force_down(directory)


def _foreground(directory: Path, env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "nbplugins", "sandbox", "up", "--dir", str(directory), *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def test_ctrl_c_on_a_foreground_up_stops_everything(tmp_path):
    directory, env = tmp_path / "sb", clean_env(tmp_path / "home")
    proc = _foreground(directory, env, tmp_path / "up.log", "--services", "s3,oidc")
    try:
        wait_for(lambda: read_state(directory).get("status") == "running", proc)
        pids = recorded_pids(read_state(directory))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert none_alive(pids) and not processes_under(directory)
        assert read_state(directory)["status"] == "stopped"
        assert "sandbox stopped" in (tmp_path / "up.log").read_text()
    finally:
        proc.kill()
        force_down(directory)


def test_down_after_sigkill_of_a_foreground_up(tmp_path):
    directory, env = tmp_path / "sb", clean_env(tmp_path / "home")
    proc = _foreground(directory, env, tmp_path / "up.log", "--services", "s3,oidc")
    try:
        wait_for(lambda: read_state(directory).get("status") == "running", proc)
        pids = recorded_pids(read_state(directory))
        proc.kill()
        proc.wait(timeout=30)
        down = nbp("sandbox", "down", "--dir", str(directory), env=env)
        assert down.returncode == 0, down.stderr
        assert none_alive(pids) and not processes_under(directory)
    finally:
        force_down(directory)


def test_down_after_sigkill_of_a_detached_up_while_it_starts(tmp_path):
    """Detached servers outlive a crash of `up`; the state file written as each starts finds them."""
    directory, env = tmp_path / "sb", clean_env(tmp_path / "home")
    proc = _foreground(directory, env, tmp_path / "up.log", "--detach")
    try:
        wait_for(lambda: len(read_state(directory).get("spawned", [])) >= 2, proc)  # kill it amid a start
        proc.kill()
        proc.wait(timeout=30)
        pids = recorded_pids(read_state(directory))
        assert processes_under(directory)  # the detached servers outlived it
        down = nbp("sandbox", "down", "--dir", str(directory), env=env)
        assert down.returncode == 0, down.stderr
        assert none_alive(pids) and not processes_under(directory)
        assert read_state(directory)["status"] == "stopped"
    finally:
        force_down(directory)
