"""FDL files and OSCAR Hub RO-Crates are read whole and checked before anything is sent: every
problem named with its service, field and line; scripts inlined; both FDL generations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbplugins import secrets
from nbplugins.errors import ValidationError
from nbplugins.services import fdl

SERVICE = """\
  - {cluster}:
      name: {name}
      image: ghcr.io/grycap/alpine
      cpu: '0.5'
      memory: 256Mi
      script: {script}
      input:
      - storage_provider: minio.default
        path: {name}/in
      output:
      - storage_provider: minio.default
        path: {name}/out
"""


def write(folder: Path, *services: str, extra: str = "", script: bool = True, filename: str = "fdl.yml") -> Path:
    if script:
        (folder / "script.sh").write_text("#!/bin/sh\ncat $INPUT_FILE_PATH\n")
    path = folder / filename
    path.write_text("functions:\n  oscar:\n" + "".join(services) + extra)
    return path


def service(name: str = "upper", cluster: str = "test", script: str = "script.sh", **extra: str) -> str:
    text = SERVICE.format(name=name, cluster=cluster, script=script)
    return text + "".join(f"      {k}: {v}\n" for k, v in extra.items())


def test_a_valid_fdl_gives_its_services_with_the_script_inlined(tmp_path):
    checked = fdl.load(write(tmp_path, service("one"), service("two")))
    bodies = checked.for_cluster("test")
    assert [b["name"] for b in bodies] == ["one", "two"]
    assert bodies[0]["script"].startswith("#!/bin/sh") and bodies[0]["cluster_id"] == "test"
    assert checked.cluster_ids == ["test"]
    assert [b["name"] for b in checked.for_cluster(None)] == ["one", "two"]


def test_an_oscar_hub_ro_crate_folder_is_an_fdl_source(tmp_path):
    crate = tmp_path / "crate"
    crate.mkdir()
    write(crate, service("grayify"))
    (crate / "ro-crate-metadata.json").write_text(json.dumps(
        {"@context": "https://w3id.org/ro/crate/1.1/context",
         "@graph": [{"@id": "./", "@type": "Dataset", "name": "Grayify images"}]}))
    checked = fdl.load(crate)
    assert checked.description == "Grayify images"
    assert checked.for_cluster("test")[0]["script"].startswith("#!/bin/sh")


def test_a_folder_without_an_fdl_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="without fdl.yml"):
        fdl.load(tmp_path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "fdl.yml"
    path.write_text("functions:\n  oscar:\n  - test:\n      name: [unclosed\n      image: x\n")
    with pytest.raises(ValidationError, match=r"line \d+: invalid YAML"):
        fdl.load(path)


def test_an_unknown_field_is_named_with_its_line(tmp_path):
    path = write(tmp_path, service("upper", imagee="typo"))
    with pytest.raises(ValidationError) as info:
        fdl.load(path)
    text = str(info.value)
    assert "unknown field 'imagee'" in text and "service 'upper'" in text and "line 15" in text  # the line of imagee


@pytest.mark.parametrize(("name", "why"), [
    ("a" * 40, "40 characters; OSCAR allows at most 39"),
    ("Upper_Case", "lowercase DNS label"),
    ("-dash", "lowercase DNS label"),
])
def test_service_names_must_be_short_lowercase_dns_labels(tmp_path, name, why):
    with pytest.raises(ValidationError, match=why):
        fdl.load(write(tmp_path, service(name)))


def test_a_missing_script_file_is_named(tmp_path):
    with pytest.raises(ValidationError, match="script file nope.sh not found"):
        fdl.load(write(tmp_path, service(script="nope.sh")))


def test_cpu_and_memory_must_be_strings(tmp_path):
    text = service().replace("cpu: '0.5'", "cpu: 0.5").replace("memory: 256Mi", "memory: 1")
    with pytest.raises(ValidationError) as info:
        fdl.load(write(tmp_path, text))
    assert "cpu must be a string (quote it" in str(info.value) and "memory must be a string" in str(info.value)


def test_a_cluster_id_not_in_the_fdl_is_refused(tmp_path):
    checked = fdl.load(write(tmp_path, service(cluster="alpha"), service("two", cluster="beta")))
    with pytest.raises(ValidationError, match="cluster id 'gamma' is not in the FDL .it names alpha, beta"):
        checked.for_cluster("gamma")
    with pytest.raises(ValidationError, match="say which one"):
        checked.for_cluster(None)


def test_one_bad_service_fails_the_whole_file_naming_it(tmp_path):
    path = write(tmp_path, service("good"), service("bad", script="missing.sh"), service("fine"))
    with pytest.raises(ValidationError) as info:
        fdl.load(path)
    assert "nothing deployed" in str(info.value) and "service 'bad'" in str(info.value)
    assert "'good'" not in str(info.value)


def test_a_storage_provider_must_be_defined_in_the_fdl(tmp_path):
    text = service().replace("storage_provider: minio.default\n        path: upper/out",
                             "storage_provider: s3.mine\n        path: upper/out")
    with pytest.raises(ValidationError, match="storage provider 's3.mine' is not defined"):
        fdl.load(write(tmp_path, text))


def test_provider_credentials_and_env_secrets_are_registered(tmp_path, canary):
    extra = (f"storage_providers:\n  s3:\n    mine:\n      access_key: AK{canary}\n      secret_key: SK{canary}\n"
             "      region: us-east-1\n")
    text = service() + f"      environment:\n        secrets:\n          API_KEY: EV{canary}\n"
    checked = fdl.load(write(tmp_path, text, extra=extra))
    body = checked.for_cluster("test")[0]
    assert body["storage_providers"]["s3"]["mine"]["secret_key"] == f"SK{canary}"
    assert canary not in secrets.redact(json.dumps(body))


def test_fields_of_the_other_generation_are_named(tmp_path):
    extra = "clusters:\n  other:\n    endpoint: https://other.example.org\n    auth_user: u\n    auth_password: p1234567\n"
    text = service() + "      delegation: random\n      replicas:\n      - type: oscar\n        cluster_id: other\n" \
        "        service_name: upper\n"
    body = fdl.load(write(tmp_path, text, extra=extra)).for_cluster("test")[0]
    assert fdl.ignored_fields(body, "v4.1.2") == ["delegation", "replicas"]
    assert fdl.ignored_fields(body, "v3.6.0") == []
    note = fdl.generation_note("upper", fdl.ignored_fields(body, "v4.1.2"), "v4.1.2")
    assert "ignores delegation, replicas" in note and "federation" in note
    assert fdl.ignored_fields({"federation": {}}, "v3.5.3") == ["federation"]


def test_a_replica_naming_an_unknown_cluster_is_refused(tmp_path):
    text = service() + "      replicas:\n      - type: oscar\n        cluster_id: nowhere\n        service_name: x\n"
    with pytest.raises(ValidationError, match="replica cluster_id 'nowhere' is not in the FDL's clusters"):
        fdl.load(write(tmp_path, text))


def test_environment_values_are_sent_as_text(tmp_path):
    text = service() + "      environment:\n        variables:\n          N: 3\n          FLAG: true\n"
    body = fdl.load(write(tmp_path, text)).for_cluster("test")[0]
    assert body["environment"]["variables"] == {"N": "3", "FLAG": "true"}
