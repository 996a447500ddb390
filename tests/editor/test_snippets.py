"""Every code snippet nbplugins ships works: each is executed in a real kernel against the
loopback servers (S3, Onedata), with only its placeholder values changed."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import boto3
import nbformat
import pytest

from nbplugins.editor import factory
from nbplugins.papermill.engine import execute
from tests.editor.conftest import ROOT
from tests.servers import s3 as s3_servers
from tests.storage.onedata_fixtures import onedata_env, onedata_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)
CSV = "station,temperature\na,1.5\nb,2.5\n"


def snippet(name: str) -> str:
    doc = json.loads((factory.SOURCE / "code-snippets" / f"{name}.json").read_text())
    assert doc["schema_name"] == "code-snippet"
    return "\n".join(doc["metadata"]["code"])


def run_in_kernel(code: str, cwd: Path) -> str:
    """Execute ``code`` as one notebook cell; return the executed notebook's text."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code)]
    src, out = cwd / "snippet.ipynb", cwd / "snippet.out.ipynb"
    nbformat.write(nb, str(src))
    execute(src, out, {}, cwd=str(cwd))
    return out.read_text()


def printed(text: str) -> str:
    """What the cell printed (its stream outputs)."""
    cells = json.loads(text)["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []) if o["output_type"] == "stream")


def put_objects(rclone, bucket: str, objects: dict[str, str]) -> None:
    env = s3_servers.aws_env(rclone)
    client = boto3.client("s3", endpoint_url=rclone.url, region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body.encode())


def test_every_shipped_snippet_is_tested_here():
    tested = {"nbplugins-hub-token", "nbplugins-s3-pandas", "nbplugins-onedata-pandas", "nbplugins-stage-folder",
              "nbplugins-sweep",
              # tests/editor/test_snippets_services.py
              "nbplugins-dataminer-process", "nbplugins-ccp-process", "nbplugins-oscar-run"}
    assert {p.stem for p in (factory.SOURCE / "code-snippets").glob("*.json")} == tested


def test_hub_token_snippet_reads_the_token_and_never_shows_it(tmp_path, monkeypatch, make_jwt, canary):
    token = make_jwt(jti=canary)
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", token)
    text = run_in_kernel(snippet("nbplugins-hub-token"), tmp_path)
    assert f"token found: {len(token)} characters" in text and canary not in text


def test_s3_pandas_snippet_reads_a_table(tmp_path, s3_env, rclone, bucket):
    put_objects(rclone, bucket, {"path/table.csv": CSV})
    code = snippet("nbplugins-s3-pandas").replace("s3://my-bucket/path/table.csv", f"s3://{bucket}/path/table.csv")
    code += "\nprint('rows', len(df), 'mean', df.temperature.mean())"
    text = run_in_kernel(code, tmp_path)
    assert "rows 2 mean 2.0" in text and s3_env["AWS_SECRET_ACCESS_KEY"] not in text


def test_onedata_pandas_snippet_reads_a_table(tmp_path, onedata_env):  # noqa: F811
    name = f"t-{uuid.uuid4().hex[:8]}.csv"
    (onedata_env.space_dir("space1") / name).write_text(CSV)
    code = snippet("nbplugins-onedata-pandas").replace("onedata://my-space/path/table.csv", f"onedata://space1/{name}")
    code += "\nprint('rows', len(df))"
    text = run_in_kernel(code, tmp_path)
    assert "rows 2" in text and onedata_env.token not in text


def test_stage_folder_snippet_copies_a_folder(tmp_path, s3_env, rclone, bucket):
    put_objects(rclone, bucket, {"inputs/a.csv": CSV, "inputs/sub/b.csv": CSV})
    code = snippet("nbplugins-stage-folder").replace("s3://my-bucket/inputs/", f"s3://{bucket}/inputs/")
    text = run_in_kernel(code, tmp_path)
    assert "2 files" in text
    assert (tmp_path / "data" / "inputs" / "a.csv").read_text() == CSV
    assert (tmp_path / "data" / "inputs" / "sub" / "b.csv").is_file()


def test_sweep_snippet_runs_a_grid_and_writes_the_report(tmp_path):
    (tmp_path / "templates").mkdir()
    shutil.copy(ROOT / "templates" / "random_walk.ipynb", tmp_path / "templates")
    text = run_in_kernel(snippet("nbplugins-sweep").replace('"seed": [1, 2]', '"seed": [1]'), tmp_path)
    assert "failed:" not in printed(text) and "report:" in printed(text)
    assert (tmp_path / "sweep-random_walk" / "index.html").is_file()
    assert len(list((tmp_path / "sweep-random_walk" / "runs").glob("walk-*.ipynb"))) == 2
