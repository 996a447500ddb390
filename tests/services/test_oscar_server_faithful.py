"""The OSCAR test server is faithful: the official ``oscar-python`` client works against it, and
its answers validate against ``tests/reference/oscar-api.yaml``; plus the behaviours the
client relies on (auth, 403 until provisioned, cold starts, failing jobs, both log shapes)."""

# ruff: noqa: F811 -- fixtures imported from oscar_fixtures are test parameters

from __future__ import annotations

import base64
import io
import json
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource

from tests.servers.oscar_fixtures import VO, oscar_factory, oscar_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "tests" / "reference" / "oscar-api.yaml"


def _spec() -> dict:
    """The published document; one description holds an unquoted ': ' that strict YAML refuses."""
    lines = []
    for line in SPEC_PATH.read_text().splitlines():
        key, sep, value = line.partition("description: ")
        if sep and not key.strip() and ": " in value and not value.startswith(("'", '"')):
            line = f"{key}description: {json.dumps(value)}"
        lines.append(line)
    return yaml.safe_load("\n".join(lines))


SPEC = _spec()


def validate(schema: dict, value: object) -> None:
    """Validate ``value`` against an OpenAPI 3.0 schema that may $ref the document's components."""
    registry = Registry().with_resource("urn:oscar-api", Resource.opaque(SPEC))
    OAS30Validator(schema, registry=registry, format_checker=oas30_format_checker).validate(value)


def check(method: str, template: str, response: requests.Response) -> None:
    """The status is documented for this operation and a JSON body matches its schema."""
    operation = SPEC["paths"][template][method.lower()]
    documented = operation["responses"]
    assert str(response.status_code) in documented, (method, template, response.status_code, response.text)
    content = documented[str(response.status_code)].get("content") or {}
    if "application/json" in content:
        validate({"$ref": "urn:oscar-api#" + _pointer_of(content["application/json"]["schema"])}, response.json())
    elif "text/plain" in content:
        assert response.headers["Content-Type"].startswith("text/plain")


def _pointer_of(schema: dict) -> str:
    """A JSON pointer for an inline or $ref schema (inline ones are added under components)."""
    if "$ref" in schema:
        return schema["$ref"].lstrip("#")
    key = f"inline{len(SPEC['components']['schemas'])}"
    SPEC["components"]["schemas"][key] = schema
    return f"/components/schemas/{key}"


def service_def(name: str, **extra) -> dict:
    return {"name": name, "image": "ghcr.io/grycap/cowsay", "script": "#!/bin/sh\ncat $INPUT_FILE_PATH\n",
            "cpu": "0.5", "memory": "128Mi",
            "input": [{"storage_provider": "minio.default", "path": f"{name}/in"}],
            "output": [{"storage_provider": "minio.default", "path": f"{name}/out"}], **extra}


def unique(prefix: str = "svc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def basic_client(server):
    from oscar_python.client import Client

    return Client({"cluster_id": "test", "endpoint": server.url, "user": server.user,
                   "password": server.password, "ssl": "False"})


def oidc_client(server, token: str | None = None):
    from oscar_python.client import Client

    return Client({"cluster_id": "test", "endpoint": server.url, "oidc_token": token or server.oidc_token,
                   "ssl": "False"})


@pytest.fixture
def settings_restored(oscar_server):
    """Put the shared server's job settings back after a test changes them."""
    before = oscar_server.configure()
    yield oscar_server
    oscar_server.configure(**before)


# -- (a) the official client


def test_oscar_python_basic_lists_gets_creates_updates_and_removes(oscar_server):
    client, name = basic_client(oscar_server), unique()
    assert client.health_check().text == "Ok"
    assert client.get_cluster_info().json()["version"].startswith("v4")
    assert "minio_provider" in client.get_cluster_config().json()
    assert client.create_service(service_def(name)).status_code == 201
    assert name in [s["name"] for s in client.list_services().json()]
    got = client.get_service(name).json()
    assert len(got["token"]) == 64 and int(got["token"], 16) >= 0
    assert client.update_service(name, service_def(name, memory="512Mi")).status_code == 204
    assert client.get_service(name).json()["memory"] == "512Mi"
    assert client.get_service(name).json()["token"] == got["token"]
    with pytest.raises(ValueError, match="already present"):
        client.create_service(service_def(name))
    assert client.remove_service(name).status_code == 204
    with pytest.raises(requests.HTTPError):
        client.get_service(name)


def test_oscar_python_creates_from_an_fdl_file(oscar_server, tmp_path):
    name = unique()
    (tmp_path / "script.sh").write_text("#!/bin/sh\necho hi\n")
    svc = {k: v for k, v in service_def(name).items() if k != "script"}
    fdl = {"functions": {"oscar": [{"test": {**svc, "script": "script.sh", "cpu": 1}}]}}
    (tmp_path / "fdl.yml").write_text(yaml.safe_dump(fdl))
    assert basic_client(oscar_server).create_service(str(tmp_path / "fdl.yml")).status_code == 201
    stored = basic_client(oscar_server).get_service(name).json()
    assert stored["script"] == "#!/bin/sh\necho hi\n" and stored["cpu"] == "1"


def test_oscar_python_runs_synchronously_and_decodes_the_answer(oscar_server, tmp_path):
    client, name = basic_client(oscar_server), unique()
    client.create_service(service_def(name))
    out = tmp_path / "answer.txt"
    response = client.run_service(name, input="hello oscar", output=str(out))
    assert response.status_code == 200
    assert out.read_text() == "HELLO OSCAR"
    oidc = oidc_client(oscar_server)
    assert base64.b64decode(oidc.run_service(name, input="via oidc").text) == b"VIA OIDC"


def test_oscar_python_async_call_creates_a_job_listed_with_its_logs(oscar_server):
    client, name = basic_client(oscar_server), unique()
    client.create_service(service_def(name))
    response = client.run_service(name, input="async input", async_call=True)
    assert response.status_code == 201 and response.text == ""
    jobs = wait_for(lambda: {k: v for k, v in client.list_jobs(name).json()["jobs"].items()
                             if v["status"] == "Succeeded"})
    job = next(iter(jobs))
    assert "Uploading file" in client.get_job_logs(name, job).text
    storage = client.create_storage_client(name)
    listed = storage.list_files_from_path("minio.default", f"{name}/out/")
    keys = [o["Key"] for o in listed["Contents"]]
    assert len(keys) == 1 and keys[0].endswith(".out")
    assert client.remove_job(name, job).status_code == 204
    assert client.list_jobs(name).json()["jobs"] == {}


def test_oscar_python_uploads_trigger_jobs_as_minio_webhooks_do(oscar_server, tmp_path):
    client, name = basic_client(oscar_server), unique()
    client.create_service(service_def(name))
    (tmp_path / "a.txt").write_text("from a file")
    client.create_storage_client(name).upload_file("minio.default", str(tmp_path / "a.txt"), f"{name}/in")
    wait_for(lambda: [j for j in client.list_jobs(name).json()["jobs"].values() if j["status"] == "Succeeded"])
    body = oscar_server.s3_client().get_object(Bucket=name, Key="out/a.out")["Body"].read()
    assert body == b"FROM A FILE"


def test_oscar_python_with_an_oidc_token_lists_gets_creates_and_lists_jobs(oscar_server):
    client, name = oidc_client(oscar_server), unique()
    assert client.create_service(service_def(name, vo=VO)).status_code == 201
    assert client.get_service(name).json()["owner"] == oscar_server.oidc_sub
    assert name in [s["name"] for s in client.list_services().json()]
    assert client.run_service(name, input="x", async_call=True).status_code == 201
    wait_for(lambda: client.list_jobs(name).json()["jobs"])
    minio = client.get_cluster_config().json()["minio_provider"]
    assert minio["access_key"] == oscar_server.user_keys[oscar_server.oidc_sub]["access_key"]


# -- (b) the answers validate against the published OpenAPI document


def test_every_answer_validates_against_the_openapi_document(oscar_server):
    url, auth, name = oscar_server.url, (oscar_server.user, oscar_server.password), unique()
    check("GET", "/health", requests.get(f"{url}/health"))
    check("GET", "/system/info", requests.get(f"{url}/system/info", auth=auth))
    check("GET", "/system/info", requests.get(f"{url}/system/info"))
    check("GET", "/system/config", requests.get(f"{url}/system/config", auth=auth))
    check("GET", "/system/config", requests.get(f"{url}/system/config/",
                                                headers={"Authorization": f"Bearer {oscar_server.oidc_token}"}))
    check("POST", "/system/services", requests.post(f"{url}/system/services", json=service_def(name), auth=auth))
    check("POST", "/system/services", requests.post(f"{url}/system/services", json=service_def(name), auth=auth))
    check("POST", "/system/services", requests.post(f"{url}/system/services", json={"name": "x"}, auth=auth))
    check("PUT", "/system/services", requests.put(f"{url}/system/services", json=service_def(name), auth=auth))
    check("PUT", "/system/services", requests.put(f"{url}/system/services", json=service_def(unique()), auth=auth))
    check("GET", "/system/services", requests.get(f"{url}/system/services", auth=auth))
    check("GET", "/system/services/{serviceName}", requests.get(f"{url}/system/services/{name}", auth=auth))
    check("GET", "/system/services/{serviceName}", requests.get(f"{url}/system/services/nope", auth=auth))
    token = requests.get(f"{url}/system/services/{name}", auth=auth).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    check("POST", "/run/{serviceName}", requests.post(f"{url}/run/{name}", data=b"aGk=", headers=bearer))
    check("POST", "/run/{serviceName}", requests.post(f"{url}/run/{name}", data=b"aGk=", auth=auth))
    check("POST", "/run/{serviceName}", requests.post(f"{url}/run/nope", data=b"aGk=", headers=bearer))
    check("POST", "/job/{serviceName}", requests.post(f"{url}/job/{name}", data=b"aGk=", headers=bearer))
    check("POST", "/job/{serviceName}", requests.post(f"{url}/job/nope", data=b"aGk=", headers=bearer))
    wait_for(lambda: requests.get(f"{url}/system/logs/{name}", auth=auth).json()["jobs"])
    listing = requests.get(f"{url}/system/logs/{name}", auth=auth)
    check("GET", "/system/logs/{serviceName}", listing)
    job = next(iter(listing.json()["jobs"]))
    check("GET", "/system/logs/{serviceName}/{jobName}", requests.get(f"{url}/system/logs/{name}/{job}", auth=auth))
    check("GET", "/system/logs/{serviceName}/{jobName}", requests.get(f"{url}/system/logs/{name}/no", auth=auth))
    check("DELETE", "/system/logs/{serviceName}/{jobName}",
          requests.delete(f"{url}/system/logs/{name}/{job}", auth=auth))
    check("DELETE", "/system/logs/{serviceName}", requests.delete(f"{url}/system/logs/{name}?all=true", auth=auth))
    check("DELETE", "/system/services/{serviceName}", requests.delete(f"{url}/system/services/{name}", auth=auth))
    check("DELETE", "/system/services/{serviceName}", requests.delete(f"{url}/system/services/{name}", auth=auth))
    check("GET", "/system/services", requests.get(f"{url}/system/services", auth=("oscar", "wrong")))


def test_v3_answers_a_flat_job_map_and_409_for_a_duplicate(oscar_factory):
    server = oscar_factory(version="v3", knative=False, job_seconds=0.1)
    url, auth, name = server.url, (server.user, server.password), unique()
    assert requests.post(f"{url}/system/services", json=service_def(name), auth=auth).status_code == 201
    duplicate = requests.post(f"{url}/system/services", json=service_def(name), auth=auth)
    assert duplicate.status_code == 409 and "already exists" in duplicate.text
    token = requests.get(f"{url}/system/services/{name}", auth=auth).json()["token"]
    requests.post(f"{url}/job/{name}", data=b"aGk=", headers={"Authorization": f"Bearer {token}"})
    flat = wait_for(lambda: requests.get(f"{url}/system/logs/{name}", auth=auth).json())
    assert "jobs" not in flat
    for info in flat.values():
        validate({"$ref": "urn:oscar-api#/components/schemas/JobInfo"}, info)
    assert "serverless_backend" not in requests.get(f"{url}/system/info", auth=auth).json()


# -- behaviours the client relies on


def test_job_list_is_paginated_70_a_page_by_default(oscar_server, settings_restored):
    url, auth, name = oscar_server.url, (oscar_server.user, oscar_server.password), unique()
    assert oscar_server.configure()["page_size"] == 70
    oscar_server.configure(page_size=3)
    requests.post(f"{url}/system/services", json=service_def(name), auth=auth)
    token = requests.get(f"{url}/system/services/{name}", auth=auth).json()["token"]
    for _ in range(7):
        requests.post(f"{url}/job/{name}", data=b"aGk=", headers={"Authorization": f"Bearer {token}"})
    first = requests.get(f"{url}/system/logs/{name}", auth=auth).json()
    assert len(first["jobs"]) == 3 and first["remaining_jobs"] == 4
    second = requests.get(f"{url}/system/logs/{name}", params={"page": first["next_page"]}, auth=auth).json()
    third = requests.get(f"{url}/system/logs/{name}", params={"page": second["next_page"]}, auth=auth).json()
    assert len(third["jobs"]) == 1 and "next_page" not in third and "remaining_jobs" not in third
    assert len(set(first["jobs"]) | set(second["jobs"]) | set(third["jobs"])) == 7


def test_oidc_job_is_refused_until_the_user_called_the_system_api(oscar_server):
    url, auth, name = oscar_server.url, (oscar_server.user, oscar_server.password), unique()
    requests.post(f"{url}/system/services", json=service_def(name), auth=auth)
    token = oscar_server.add_token(f"carol-{uuid.uuid4().hex[:6]}@egi.eu")
    bearer = {"Authorization": f"Bearer {token}"}
    refused = requests.post(f"{url}/job/{name}", data=b"aGk=", headers=bearer)
    assert refused.status_code == 403 and "submit a direct request first" in refused.text
    assert requests.get(f"{url}/system/services/{name}", headers=bearer).status_code == 200
    assert requests.post(f"{url}/job/{name}", data=b"aGk=", headers=bearer).status_code == 201


def test_run_and_job_take_service_or_oidc_tokens_never_basic(oscar_server):
    url, auth, name = oscar_server.url, (oscar_server.user, oscar_server.password), unique()
    requests.post(f"{url}/system/services", json=service_def(name, vo=VO), auth=auth)
    for path in (f"/run/{name}", f"/job/{name}"):
        assert requests.post(f"{url}{path}", data=b"aGk=", auth=auth).status_code == 401
        assert requests.post(f"{url}{path}", data=b"aGk=", headers={"Authorization": "Bearer " + "0" * 64}
                             ).status_code == 401
        other = requests.post(f"{url}{path}", data=b"aGk=",
                              headers={"Authorization": f"Bearer {oscar_server.other_vo_token}"})
        assert other.status_code == 403 and VO in other.text
    expired = oscar_server.add_token("late@egi.eu", lifetime=-10)
    assert requests.get(f"{url}/system/services", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    outsider = oscar_server.add_token("out@egi.eu", vos=("vo.unknown.eu",))
    assert requests.get(f"{url}/system/info", headers={"Authorization": f"Bearer {outsider}"}).status_code == 401
    listed = requests.get(f"{url}/system/services", headers={"Authorization": f"Bearer {oscar_server.other_vo_token}"})
    assert name not in [s["name"] for s in listed.json()]
    assert requests.get(f"{url}/system/services/{name}",
                        headers={"Authorization": f"Bearer {oscar_server.other_vo_token}"}).status_code == 403


def test_run_is_404_without_a_serverless_backend(oscar_factory):
    server = oscar_factory(version="v4", knative=False)
    url, auth, name = server.url, (server.user, server.password), unique()
    requests.post(f"{url}/system/services", json=service_def(name), auth=auth)
    token = requests.get(f"{url}/system/services/{name}", auth=auth).json()["token"]
    assert requests.post(f"{url}/run/{name}", data=b"aGk=", headers={"Authorization": f"Bearer {token}"}
                         ).status_code == 404
    assert "serverless_backend" not in requests.get(f"{url}/system/config", auth=auth).json()["config"]


def test_cold_starts_answer_gateway_errors_first(oscar_server, settings_restored):
    url, auth, name = oscar_server.url, (oscar_server.user, oscar_server.password), unique()
    requests.post(f"{url}/system/services", json=service_def(name), auth=auth)
    token = requests.get(f"{url}/system/services/{name}", auth=auth).json()["token"]
    oscar_server.configure(cold_starts=3)
    codes = [requests.post(f"{url}/run/{name}", data=b"aGk=", headers={"Authorization": f"Bearer {token}"}
                           ).status_code for _ in range(4)]
    assert codes == [504, 502, 503, 200]


def test_run_answers_by_the_supervisor_rules(oscar_server, settings_restored):
    url, auth, name = oscar_server.url, (oscar_server.user, oscar_server.password), unique()
    requests.post(f"{url}/system/services", json=service_def(name), auth=auth)
    bearer = {"Authorization": f"Bearer {oscar_server.oidc_token}"}
    oscar_server.configure(outputs=2)
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(
        requests.post(f"{url}/run/{name}", data=base64.b64encode(b"two"), headers=bearer).text)))
    assert sorted(archive.read(n) for n in archive.namelist()) == [b"TWO", b"TWO"]
    oscar_server.configure(outputs=0)
    plain = requests.post(f"{url}/run/{name}", data=json.dumps({"k": "v"}), headers=bearer)
    assert plain.text == '{"K": "V"}'


def test_a_failing_input_fails_its_job_with_a_log_line_and_others_succeed(oscar_server, settings_restored):
    url, auth, name = oscar_server.url, (oscar_server.user, oscar_server.password), unique()
    requests.post(f"{url}/system/services", json=service_def(name), auth=auth)
    oscar_server.configure(fail_inputs_matching=r"^bad")
    s3 = oscar_server.s3_client()
    for key in ("good.txt", "bad.txt"):
        s3.put_object(Bucket=name, Key=f"in/{key}", Body=key.encode())

    def finished() -> list[dict] | None:
        done = [j for j in oscar_server.jobs() if j["service"] == name and j["status"] in ("Succeeded", "Failed")]
        return done if len(done) == 2 else None

    jobs = wait_for(finished)
    status = {j["input"]: j for j in jobs}
    assert status["good.txt"]["status"] == "Succeeded" and status["bad.txt"]["status"] == "Failed"
    log = requests.get(f"{url}/system/logs/{name}/{status['bad.txt']['name']}", auth=auth).text
    assert "ERROR" in log and "bad.txt" in log
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix="out/")["Contents"]]
    assert keys == ["out/good.out"]


def test_invalid_services_are_400_and_secrets_are_never_shown(oscar_server):
    url, auth = oscar_server.url, (oscar_server.user, oscar_server.password)
    for bad in (service_def("x" * 40), service_def("Not_A_Label"), {"name": unique(), "script": "x"},
                service_def(unique(), cpu=1), service_def(unique(), input=[{"path": "", "storage_provider": "minio"}])):
        assert requests.post(f"{url}/system/services", json=bad, auth=auth).status_code == 400
    assert requests.put(f"{url}/system/services", json=service_def(unique()), auth=auth).status_code == 404
    name = unique()
    spec = service_def(name, environment={"variables": {"A": "1"}, "secrets": {"KEY": "CANARY-secret-value"}})
    requests.post(f"{url}/system/services", json=spec, auth=auth)
    shown = requests.get(f"{url}/system/services/{name}", auth=auth).text
    assert "CANARY-secret-value" not in shown and oscar_server.s3_keys["secret_key"] not in shown


def test_counts_cover_api_and_s3_requests(oscar_server):
    oscar_server.reset_counts()
    requests.get(f"{oscar_server.url}/system/info", auth=(oscar_server.user, oscar_server.password))
    oscar_server.s3_client().list_buckets()
    assert oscar_server.count("/system/info") == 1 and oscar_server.count("/job") == 0
    assert oscar_server.count("s3:") == 1


def test_oidc_users_minio_keys_work_on_the_s3_server(oscar_server):
    import boto3

    bearer = {"Authorization": f"Bearer {oscar_server.oidc_token}"}
    minio = requests.get(f"{oscar_server.url}/system/config", headers=bearer).json()["minio_provider"]
    assert minio["secret_key"] != oscar_server.s3_keys["secret_key"]
    s3 = boto3.client("s3", endpoint_url=minio["endpoint"], region_name="us-east-1",
                      aws_access_key_id=minio["access_key"], aws_secret_access_key=minio["secret_key"])
    assert "Buckets" in s3.list_buckets()


def test_deleting_logs_keeps_unfinished_jobs_unless_all(oscar_server, settings_restored):
    url, auth, name = oscar_server.url, (oscar_server.user, oscar_server.password), unique()
    requests.post(f"{url}/system/services", json=service_def(name), auth=auth)
    token = requests.get(f"{url}/system/services/{name}", auth=auth).json()["token"]
    requests.post(f"{url}/job/{name}", data=b"aGk=", headers={"Authorization": f"Bearer {token}"})
    wait_for(lambda: all(j["status"] == "Succeeded" for j in requests.get(
        f"{url}/system/logs/{name}", auth=auth).json()["jobs"].values()))
    oscar_server.configure(job_seconds=600)
    requests.post(f"{url}/job/{name}", data=b"aGk=", headers={"Authorization": f"Bearer {token}"})
    assert requests.delete(f"{url}/system/logs/{name}", auth=auth).status_code == 204
    left = requests.get(f"{url}/system/logs/{name}", auth=auth).json()["jobs"]
    assert len(left) == 1 and next(iter(left.values()))["status"] in ("Pending", "Running")
    requests.delete(f"{url}/system/logs/{name}", params={"all": "true"}, auth=auth)
    assert requests.get(f"{url}/system/logs/{name}", auth=auth).json()["jobs"] == {}


def test_no_token_password_or_key_reaches_the_server_log(oscar_server):
    text = oscar_server.process.log() + oscar_server.s3.log()
    for secret in (oscar_server.oidc_token, oscar_server.other_vo_token, oscar_server.password,
                   oscar_server.s3_keys["secret_key"], *(k["secret_key"] for k in oscar_server.user_keys.values())):
        assert secret not in text
