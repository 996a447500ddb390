"""The example pipelines of ``pipelines/`` run unchanged against the sandbox (every service on
loopback), pass ``elyra-pipeline validate``, and publish their results to the sandbox's S3."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox.helpers import clean_env, force_down, nbp
from tests.servers import harness

ROOT = Path(__file__).resolve().parents[2]
SERVICES = "oidc,s3,onedata,wps,processes,oscar"
EXAMPLES = ("flagship", "stage_analyse_publish", "dataminer_climate", "oscar_ccp", "mission")

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("sandbox") / "sb"
    env = clean_env(tmp_path_factory.mktemp("home"))
    up = nbp("sandbox", "up", "--dir", str(directory), "--services", SERVICES, "--detach", env=env, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        yield {**env, "NBPLUGINS_CONFIG": str(directory / "config.toml")}
    finally:
        nbp("sandbox", "down", "--dir", str(directory), env=env)
        force_down(directory)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_pipeline_is_built_from_its_spec_and_passes_elyra_validate(name, tmp_path):
    built = ROOT / "pipelines" / f".check-{name}.pipeline"  # beside the spec: node paths are relative
    try:
        done = nbp("pipeline", "build", str(ROOT / "pipelines" / f"{name}.yaml"), "-o", str(built),
                   env=clean_env(tmp_path))
        assert done.returncode == 0, done.stderr
        assert json.loads(built.read_text()) == json.loads((ROOT / "pipelines" / f"{name}.pipeline").read_text()), \
            f"pipelines/{name}.pipeline is stale: rebuild it from pipelines/{name}.yaml"
    finally:
        built.unlink(missing_ok=True)
    check = subprocess.run([harness.venv_bin("elyra-pipeline"), "validate", f"pipelines/{name}.pipeline"],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert check.returncode == 0 and "SUCCEEDED" in check.stdout, check.stdout + check.stderr


@pytest.mark.parametrize(("name", "published"), [
    ("dataminer_climate", {"dataminer/summary.csv", "dataminer/results.json", "climatology/anomaly_map.png",
                           "climatology/anomaly_table.csv"}),
    ("oscar_ccp", {"oscar/measurements/measurements.out", "ccp/results.json", "ccp/stdout.txt"}),
    ("mission", {"dataminer/summary.csv", "ccp/output/part-3.txt", "oscar/measurements/measurements.out",
                 "climatology/anomaly_map.png"}),
])
def test_the_service_pipelines_run_against_the_sandbox(profile, tmp_path, name, published):
    run = nbp("pipeline", "run", str(ROOT / "pipelines" / f"{name}.pipeline"), "-j", "2", "--run-dir",
              str(tmp_path / "run"), env=profile, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {n["status"] for n in record["nodes"].values()} == {"succeeded"}
    assert (tmp_path / "run" / "report.html").is_file()
    got = nbp("data", "get", f"s3://sandbox/results/{name}/", f"{tmp_path / 'published'}/", env=profile)
    assert got.returncode == 0, got.stderr
    files = {p.relative_to(tmp_path / "published").as_posix() for p in (tmp_path / "published").rglob("*") if p.is_file()}
    assert published <= files, files
    secrets = [line.split("=", 1)[1].strip().strip('"') for line in Path(profile["NBPLUGINS_CONFIG"]).read_text().splitlines()
               if line.split("=", 1)[0].strip() in ("secret_access_key", "token", "refresh_token", "client_secret", "password")]
    texts = [p.read_text(errors="replace") for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert secrets and not [s for s in secrets if any(s in t for t in texts + [run.stdout, run.stderr])]
