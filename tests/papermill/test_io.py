"""papermill I/O handlers: s3:// and onedata:// through the storage layer, with buffered remote saves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.servers import s3 as s3_servers
from tests.servers.faultproxy import FaultProxy

try:
    from tests.storage.onedata_fixtures import onedata_env, onedata_server  # noqa: F401
except ImportError:  # the Onedata fixtures are another module's; without them that test skips
    onedata_env = None

PAPERMILL = str(Path(sys.executable).parent / "papermill")


def notebook(cells: list[str]) -> bytes:
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb).encode()


def upload(server, bucket_name: str, key: str, body: bytes) -> None:
    import boto3

    boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                 aws_access_key_id=str(server.extra["access_key"]),
                 aws_secret_access_key=str(server.extra["secret_key"])).put_object(
        Bucket=bucket_name, Key=key, Body=body)


def run_papermill(src: str, dest: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PAPERMILL, "--no-progress-bar", "-k", "python3", src, dest], capture_output=True,
                          text=True, timeout=240, cwd=cwd, env={**os.environ, **env})


SEVEN = ["x = 1", "y = x + 1", "print(y)", "import os", "z = [i for i in range(10)]", "print(sum(z))", "print('done')"]


def test_papermill_cli_writes_s3_output_twice_not_once_per_cell(rclone, bucket, tmp_path):
    upload(rclone, bucket, "in/seven.ipynb", notebook(SEVEN))
    with FaultProxy(rclone.port) as px:
        env = {**s3_servers.aws_env(rclone, px.url), "NBPLUGINS_SAVE_INTERVAL": "600"}
        result = run_papermill(f"s3://{bucket}/in/seven.ipynb", f"s3://{bucket}/out/seven.ipynb", env, tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        puts = px.count("PUT", "/out/seven.ipynb")
    assert puts == 2  # at the start and at the end (papermill itself saves 17 times)
    stored = Path(str(rclone.extra["root"])) / bucket / "out" / "seven.ipynb"
    out = json.loads(stored.read_text())
    assert out["metadata"]["papermill"]["end_time"] and "".join(out["cells"][-1]["outputs"][0]["text"]) == "done\n"


def test_a_long_run_is_saved_every_interval_and_the_final_state_lands(rclone, bucket, tmp_path):
    cells = ["import time", *["time.sleep(0.7); print('tick')"] * 6, "print('last')"]
    upload(rclone, bucket, "in/slow.ipynb", notebook(cells))
    with FaultProxy(rclone.port) as px:
        env = {**s3_servers.aws_env(rclone, px.url), "NBPLUGINS_SAVE_INTERVAL": "1.5"}
        result = run_papermill(f"s3://{bucket}/in/slow.ipynb", f"s3://{bucket}/out/slow.ipynb", env, tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        puts = px.count("PUT", "/out/slow.ipynb")
    assert 2 < puts < 2 * len(cells) + 3  # periodic saves, far fewer than papermill's saves
    out = json.loads((Path(str(rclone.extra["root"])) / bucket / "out" / "slow.ipynb").read_text())
    assert out["metadata"]["papermill"]["end_time"] and "".join(out["cells"][-1]["outputs"][0]["text"]) == "last\n"


def test_a_failing_notebook_still_lands_with_its_error_and_no_keys(rclone, bucket, tmp_path):
    cells = ["import os\nprint(os.environ['AWS_SECRET_ACCESS_KEY'])", "raise ValueError('boom')", "print('never')"]
    upload(rclone, bucket, "in/bad.ipynb", notebook(cells))
    env = s3_servers.aws_env(rclone)
    result = run_papermill(f"s3://{bucket}/in/bad.ipynb", f"s3://{bucket}/out/bad.ipynb", env, tmp_path)
    assert result.returncode != 0 and "boom" in result.stderr
    text = (Path(str(rclone.extra["root"])) / bucket / "out" / "bad.ipynb").read_text()
    assert "ValueError" in text and "papermill-error-cell-tag" in text
    assert str(rclone.extra["secret_key"]) not in text and "***" in text


@pytest.mark.skipif(onedata_env is None, reason="tests/storage/onedata_fixtures.py is not available")
def test_s3_in_onedata_out_with_a_custom_endpoint(rclone, bucket, tmp_path, request):
    server = request.getfixturevalue("onedata_env")
    upload(rclone, bucket, "in/seven.ipynb", notebook(SEVEN))
    name = f"pm-{uuid.uuid4().hex[:8]}"
    env = {**s3_servers.aws_env(rclone), "NBPLUGINS_SAVE_INTERVAL": "600"}
    env.update({k: os.environ[k] for k in os.environ if k.startswith("ONEDATA_")})
    result = run_papermill(f"s3://{bucket}/in/seven.ipynb", f"onedata://space1/{name}.ipynb", env, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads((server.space_dir("space1") / f"{name}.ipynb").read_text())
    assert out["metadata"]["papermill"]["end_time"] and "".join(out["cells"][-1]["outputs"][0]["text"]) == "done\n"
