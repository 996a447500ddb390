"""Export through Elyra's exporters to a loopback S3: no credential in the output, secrets as
Kubernetes secret references, parameters baked in, and the KFP YAML loads with the kfp SDK."""

from __future__ import annotations

import io
import json
import tarfile

import boto3
import pytest
import yaml

from nbplugins.pipelines import spec


@pytest.fixture
def exporting(workspace, moto, monkeypatch, canary, tmp_path):
    """The flagship plus a secret env value, S3 keys that are canaries, TMPDIR inside the test."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", f"AKIA{canary[-12:]}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    monkeypatch.setenv("STATION_API_TOKEN", canary + "-token")
    doc = yaml.safe_load((workspace / "pipelines" / "flagship.yaml").read_text())
    doc["nodes"]["prepare"]["env"] = {"STATION_TOKEN": "@env:STATION_API_TOKEN"}
    (workspace / "pipelines" / "flagship.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    spec.build(workspace / "pipelines" / "flagship.yaml")
    return workspace


def _archives(moto_url: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="x", aws_secret_access_key="y",
                      region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pipelines")["Contents"]]
    return {k: s3.get_object(Bucket="pipelines", Key=k)["Body"].read() for k in keys}


def test_kfp_export_has_no_credentials_and_loads_with_the_kfp_sdk(exporting, moto, run_cli, canary, tmp_path):
    out = tmp_path / "flagship.yaml"
    code, stdout, err = run_cli("pipeline", "export", str(exporting / "pipelines" / "flagship.pipeline"),
                                "--to", "kfp", "-o", str(out), "--bucket", "pipelines", "-p", "min_humidity=45")
    assert code == 0, err
    text = out.read_text()
    assert canary not in text and canary[-12:] not in text
    from kfp.components import load_component_from_file

    component = load_component_from_file(str(out))
    assert component.name == "flagship"
    assert component.component_spec.inputs["min_humidity"].default == 45.0  # --param became the default
    assert len(component.pipeline_spec.root.dag.tasks) == 4
    doc = list(yaml.safe_load_all(text))
    platform = doc[-1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    refs = {(k["envVar"], s["secretName"], k["secretKey"])
            for ex in platform.values() for s in ex.get("secretAsEnv", []) for k in s["keyToEnv"]}
    assert ("STATION_TOKEN", "nbplugins-secrets", "STATION_API_TOKEN") in refs
    assert ("AWS_SECRET_ACCESS_KEY", "nbplugins-cos", "AWS_SECRET_ACCESS_KEY") in refs
    assert "STATION_TOKEN" not in json.dumps(doc[0]["deploymentSpec"])  # not a plain env var
    # the node archives hold notebooks with the papermill parameters baked in, and no secret
    archives = _archives(moto.url)
    prepare = next(v for k, v in archives.items() if "prepare_table" in k)
    with tarfile.open(fileobj=io.BytesIO(prepare)) as tar:
        names = tar.getnames()
        nb = json.loads(tar.extractfile("prepare_table.ipynb").read())
    assert "data/measurements.csv" in names
    injected = "".join(next(c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))["source"])
    assert 'output_path = "prepared.csv"' in injected  # written as papermill writes literals
    assert 'min_humidity = float(_nbplugins_os.environ.get("min_humidity", 45.0))' in injected
    assert not list((tmp_path / "tmp").glob("nbplugins-export-*"))  # staging removed
    for blob in archives.values():
        assert canary.encode() not in blob


def test_airflow_export_writes_a_local_dag_with_secret_references(exporting, moto, run_cli, canary, tmp_path):
    out = tmp_path / "flagship.py"
    code, _, err = run_cli("pipeline", "export", str(exporting / "pipelines" / "flagship.pipeline"),
                           "--to", "airflow", "-o", str(out), "--bucket", "pipelines")
    assert code == 0, err
    text = out.read_text()
    assert canary not in text and canary[-12:] not in text
    compile(text, str(out), "exec")  # a valid Python DAG file
    assert 'Secret("env", "STATION_TOKEN", "nbplugins-secrets", "STATION_API_TOKEN")' in text
    assert "nbplugins-cos" in text and "KubernetesPodOperator" in text
    assert text.count("KubernetesPodOperator(") == 4


def test_export_refuses_an_existing_file_and_missing_storage(exporting, run_cli, tmp_path, monkeypatch):
    out = tmp_path / "exists.yaml"
    out.write_text("keep me")
    code, _, err = run_cli("pipeline", "export", str(exporting / "pipelines" / "flagship.pipeline"),
                           "--to", "kfp", "-o", str(out), "--bucket", "b")
    assert code == 1 and "exists" in err and out.read_text() == "keep me"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    code, _, err = run_cli("pipeline", "export", str(exporting / "pipelines" / "flagship.pipeline"),
                           "--to", "kfp", "-o", str(tmp_path / "new.yaml"), "--bucket", "b")
    assert code == 1 and "object storage endpoint" in err and not (tmp_path / "new.yaml").exists()


def _members(archives: dict[str, bytes]) -> dict[str, bytes]:
    """Every file inside every node archive, decompressed."""
    files = {}
    for key, blob in archives.items():
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    files[f"{key}/{member.name}"] = tar.extractfile(member).read()
    return files


def test_node_notebooks_are_scrubbed_before_upload_and_the_originals_kept(exporting, moto, run_cli, canary,
                                                                          tmp_path, caplog):
    import base64

    import nbformat

    token = canary + "-token"  # the value of STATION_API_TOKEN, an @env: secret of the pipeline
    basic = base64.b64encode(f"station:{token}".encode()).decode()
    source = exporting / "templates" / "prepare_table.ipynb"
    nb = nbformat.read(str(source), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
    code[0].outputs = [  # what an earlier interactive run left behind
        nbformat.v4.new_output("stream", name="stdout", text=f"token {token}\nAuthorization: Basic {basic}\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": repr(canary.encode().hex())}, execution_count=3),
        nbformat.v4.new_output("error", ename="Err", evalue=f"http://key:{canary}@s3.example.org/ refused",
                               traceback=[f"s3fs secret={canary}"]),
    ]
    nb.metadata["last_run"] = {"aws_secret": canary}
    nbformat.write(nb, str(source))
    before = source.read_bytes()
    out = tmp_path / "flagship.yaml"
    code_, _, err = run_cli("pipeline", "export", str(exporting / "pipelines" / "flagship.pipeline"),
                            "--to", "kfp", "-o", str(out), "--bucket", "pipelines")
    assert code_ == 0, err
    # seven: the URL's password is one, its user part another
    assert "node 'prepare': scrubbed 7 credential value(s) from the outputs of prepare_table.ipynb" in caplog.text
    assert source.read_bytes() == before  # the user's notebook is not touched
    files = _members(_archives(moto.url))
    staged = json.loads(next(v for k, v in files.items() if k.endswith("/prepare_table.ipynb")))
    assert any("***" in "".join(o.get("text", "")) for c in staged["cells"] for o in c.get("outputs", []))
    hexed = canary.encode().hex()
    for name, blob in files.items():
        text = blob.decode("latin-1")
        assert canary not in text and basic not in text and hexed not in text.lower(), name
    exported = out.read_text()
    assert canary not in exported and hexed not in exported and basic not in exported


@pytest.mark.parametrize("where", ["code", "dependency"])
def test_a_secret_in_node_code_or_files_refuses_the_export_before_any_upload(exporting, moto, run_cli, canary,
                                                                            tmp_path, where):
    import nbformat

    if where == "code":
        source = exporting / "templates" / "summarize_table.ipynb"
        nb = nbformat.read(str(source), as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(f'key = "{canary}"'))
        nbformat.write(nb, str(source))
        expected = "node 'summary': summarize_table.ipynb holds a credential value in its code"
    else:
        with open(exporting / "templates" / "data" / "measurements.csv", "a") as handle:
            handle.write(f"# uploaded by {canary}\n")
        expected = "node 'prepare': data/measurements.csv holds a credential value; remove it before exporting"
    out = tmp_path / "flagship.yaml"
    code, _, err = run_cli("pipeline", "export", str(exporting / "pipelines" / "flagship.pipeline"),
                           "--to", "kfp", "-o", str(out), "--bucket", "pipelines")
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"nbplugins: error: {expected}"), err
    assert canary not in err and not out.exists()
    s3 = boto3.client("s3", endpoint_url=moto.url, aws_access_key_id="x", aws_secret_access_key="y",
                      region_name="us-east-1")
    assert "pipelines" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}  # nothing was uploaded
