"""The sandbox's compute services through the CLI a user types: ``sandbox up --detach`` with
DataMiner, OGC API - Processes, OSCAR and Keystone beside OIDC and S3; then ``nbplugins
dataminer``, ``processes``, ``oscar`` and ``openstack`` on the sandbox profile, every faithful
check, no secret in any output, and ``down`` leaving no process behind."""

from __future__ import annotations

import csv
import statistics
import tomllib
from collections.abc import Iterator
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
)

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("oidc", "s3", "wps", "processes", "oscar", "keystone")
SERVER_NAMES = ("pangeo-worker-1", "pangeo-worker-2", "jupyter-gateway")

pytestmark = pytest.mark.timeout(600)


class Box:
    """A detached sandbox: its folder, the environment using its profile, and every output seen."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.dir = directory
        self.env = env
        self.seen: list[str] = []

    def run(self, *args: str, timeout: float = 180) -> str:
        """Run the CLI with the sandbox profile; fail with its output unless it exits 0; its stdout."""
        done = nbp(*args, env=self.env, timeout=timeout)
        self.seen += [done.stdout, done.stderr]
        assert done.returncode == 0, f"nbplugins {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done.stdout

    def secrets(self) -> list[str]:
        """Every key, password and token in the sandbox's profile."""
        cfg = tomllib.loads((self.dir / "config.toml").read_text())
        found = [cfg["token"]["client_secret"], cfg["token"]["refresh_token"], cfg["d4science"]["token"],
                 cfg["s3"]["sandbox"]["secret_access_key"], cfg["oscar"]["clusters"]["sandbox"]["password"]]
        assert all(len(s) >= 16 for s in found)
        return found


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> Iterator[Box]:
    """``sandbox up --detach`` with the compute services; stopped (and checked stopped) by the last test."""
    home = tmp_path_factory.mktemp("home")
    directory = tmp_path_factory.mktemp("sandbox") / "sb"
    env = clean_env(home)
    up = nbp("sandbox", "up", "--dir", str(directory), "--services", ",".join(SERVICES), "--detach",
             env=env, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        assert f"export NBPLUGINS_CONFIG={directory / 'config.toml'}" in up.stdout
        sandbox = Box(directory, {**env, "NBPLUGINS_CONFIG": str(directory / "config.toml")})
        sandbox.seen += [up.stdout, up.stderr]
        yield sandbox
    finally:
        nbp("sandbox", "down", "--dir", str(directory), env=env)
        force_down(directory)


def test_the_profile_names_each_compute_service(box):
    from nbplugins import config

    cfg = config.load(box.dir / "config.toml", environ={})
    services = read_state(box.dir)["services"]
    assert cfg.d4science.dataminer_url == f"{services['wps']['url']}/wps/WebProcessingService"
    section = cfg.processes["sandbox"]
    assert (section.url, section.auth, section.token_endpoint) == (
        services["processes"]["url"], "uma", f"{services['processes']['url']}/uma/token")
    assert section.context.startswith("/d4science.research-infrastructures.eu/")
    assert cfg.oscar.default == "sandbox" and cfg.oscar.clusters["sandbox"].auth == "basic"
    assert cfg.oscar.clusters["sandbox"].endpoint == services["oscar"]["url"]
    assert cfg.openstack.default == "sandbox"
    assert cfg.openstack.sites["sandbox"].auth_url == f"{services['keystone']['url']}/v3"
    assert (box.dir / "config.toml").stat().st_mode & 0o777 == 0o600


def test_status_check_proves_every_service_with_its_official_client(box):
    out = box.run("sandbox", "status", "--dir", str(box.dir), "--check")
    for name in SERVICES:
        assert f"check {name:<9} ok" in out, out
    for client in ("OWSLib", "oscar-python", "keystoneauth1 + novaclient", "UMA grant with the OIDC issuer's"):
        assert client in out


def test_dataminer_runs_csv_summary_on_the_s3_sample(box, tmp_path):
    out = box.run("dataminer", "run", "CSV_SUMMARY", "-i", "InputTable=s3://sandbox/data/measurements.csv",
                  "-i", "Column=temperature", "-o", str(tmp_path / "dm"), "-q")
    assert "summary.csv" in out
    with open(ROOT / "templates" / "data" / "measurements.csv", newline="") as handle:
        mean = statistics.fmean(float(row["temperature"]) for row in csv.DictReader(handle))
    (row,) = list(csv.DictReader((tmp_path / "dm" / "summary.csv").open()))
    assert (row["column"], row["operation"]) == ("temperature", "mean")
    assert float(row["value"]) == pytest.approx(mean)
    box.seen.append((tmp_path / "dm" / "results.json").read_text())


def test_processes_run_goes_through_the_uma_grant_with_the_sandbox_token(box, tmp_path):
    out = box.run("processes", "--service", "sandbox", "run", "multi-files", "-i", "count=3", "-i", "prefix=part",
                  "-o", str(tmp_path / "ccp"), "--unpack", "-q")
    names = sorted(p.name for p in (tmp_path / "ccp").rglob("part-*.txt"))
    assert names == ["part-1.txt", "part-2.txt", "part-3.txt"], out
    box.seen.append((tmp_path / "ccp" / "results.json").read_text())


def test_oscar_lists_and_runs_the_sample_service(box, tmp_path):
    listed = box.run("oscar", "ls")
    assert any(line.split()[0] == "upper" for line in listed.splitlines()[1:]), listed
    (tmp_path / "note.txt").write_text("hello from the sandbox\n")
    box.run("oscar", "run", "upper", str(tmp_path / "note.txt"), "-o", str(tmp_path / "up"), "--no-progress")
    (result,) = [p for p in (tmp_path / "up").iterdir() if p.name != "results.json"]
    assert result.read_text() == "HELLO FROM THE SANDBOX\n"


def test_openstack_lists_the_servers_after_a_federated_login_with_the_sandbox_issuer(box):
    out = box.run("openstack", "servers")
    for name in SERVER_NAMES:
        assert name in out


def test_no_secret_of_the_profile_reaches_any_output(box):
    assert len(box.seen) >= 10
    for secret in box.secrets():
        for text in box.seen:
            assert secret not in text
    for log in (box.dir / "logs").iterdir():
        assert log.stat().st_mode & 0o777 == 0o600


def test_down_leaves_no_process(box):
    pids = recorded_pids(read_state(box.dir))
    assert {e["name"] for e in read_state(box.dir)["spawned"]} >= {"wps", "processes", "oscar", "keystone"}
    out = box.run("sandbox", "down", "--dir", str(box.dir))
    assert out.startswith("stopped the sandbox")
    assert none_alive(pids)
    assert not processes_under(box.dir)
    assert read_state(box.dir)["status"] == "stopped"


def test_keystone_without_the_oidc_service_is_one_clear_line(tmp_path):
    env = clean_env(tmp_path / "home")
    done = nbp("sandbox", "up", "--dir", str(tmp_path / "sb"), "--services", "keystone", "--detach", env=env)
    assert done.returncode != 0
    assert "keystone" in done.stderr and "add oidc to --services" in done.stderr
    assert "Traceback" not in done.stderr
    assert not processes_under(tmp_path / "sb")
    assert none_alive(recorded_pids(read_state(tmp_path / "sb")))
