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
    assert "output_path = 'prepared.csv'" in injected
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
