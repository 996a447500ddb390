"""The data templates run with ``papermill --engine nbplugins``: S3 in, a science step, S3 out.

fetch_inputs stages the sample data from S3 into the run folder, climatology reads the NetCDF
dataset straight from S3 with xarray through fsspec and writes its figures and table to S3,
publish_outputs writes a folder back with a manifest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbplugins import scraps

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
PAPERMILL = str(Path(sys.executable).parent / "papermill")


def papermill(template: str, out: Path, cwd: Path, **params: str) -> dict:
    argv = [PAPERMILL, "--engine", "nbplugins", str(TEMPLATES / template), str(out), "--cwd", str(cwd)]
    for key, value in params.items():
        argv += ["-p", key, value]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    return scraps.read(nbformat.read(out, as_version=4))


@pytest.fixture
def s3(rclone, bucket, s3_env):
    import boto3

    client = boto3.client("s3", endpoint_url=rclone.url, region_name="us-east-1",
                          aws_access_key_id=str(rclone.extra["access_key"]),
                          aws_secret_access_key=str(rclone.extra["secret_key"]))
    for path in (TEMPLATES / "data").iterdir():
        client.upload_file(str(path), bucket, f"samples/{path.name}")
    return client, bucket


def test_every_template_says_what_it_does_and_declares_parameters():
    for path in sorted(TEMPLATES.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), path.name
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name


def test_fetch_inputs_stages_from_s3_and_a_rerun_moves_nothing(s3, tmp_path):
    _, bucket = s3
    values = papermill("fetch_inputs.ipynb", tmp_path / "f1.ipynb", tmp_path, source=f"s3://{bucket}/samples",
                       dest="inputs")
    assert values["fetched"]["files"] == 2
    assert (tmp_path / "inputs" / "temperature.nc").stat().st_size == (TEMPLATES / "data/temperature.nc").stat().st_size
    again = papermill("fetch_inputs.ipynb", tmp_path / "f2.ipynb", tmp_path, source=f"s3://{bucket}/samples",
                      dest="inputs")
    assert again["fetched"] == {"files": 0, "bytes": 0, "skipped": 2}


def test_climatology_reads_netcdf_from_s3_and_writes_figures_back(s3, tmp_path):
    client, bucket = s3
    values = papermill("climatology.ipynb", tmp_path / "c.ipynb", tmp_path,
                       dataset=f"s3://{bucket}/samples/temperature.nc", output_dir=f"s3://{bucket}/clim")
    assert 0.5 < values["mean_anomaly"] < 1.5  # the sample warms 0.3 K a year; 2004 vs 2001-2003
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="clim/")["Contents"]}
    assert keys == {"clim/anomaly_map.png", "clim/area_mean.png", "clim/anomaly_table.csv"}


def test_publish_outputs_writes_a_manifest_last(s3, tmp_path):
    client, bucket = s3
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "table.csv").write_text("a,b\n1,2\n")
    values = papermill("publish_outputs.ipynb", tmp_path / "p.ipynb", tmp_path, source="outputs",
                       dest=f"s3://{bucket}/published")
    assert values["published"]["files"] == 1
    body = client.get_object(Bucket=bucket, Key="published/_MANIFEST.json")["Body"].read()
    assert "table.csv" in json.dumps(json.loads(body))
