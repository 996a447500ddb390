"""The OSCAR client against the contract-faithful test server: deploy idempotently, run
synchronously (cold starts, the supervisor's encodings) and in batches (a failing input, reruns),
both job-list shapes, and the refusals (401, 403, no /run) explained."""

# ruff: noqa: F811 -- fixtures imported from oscar_fixtures are test parameters

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from nbplugins import config, secrets
from nbplugins.errors import AuthError, ConfigError, ServiceError, ValidationError
from nbplugins.services import fdl, oscar, oscar_batch
from tests.servers.oscar_fixtures import VO, oscar_factory, oscar_server  # noqa: F401

DEFAULTS = {"job_seconds": 0.3, "pending_seconds": 0.1, "slots": 4, "fail_inputs_matching": "", "cold_starts": 0,
            "outputs": 1, "page_size": 70}


@pytest.fixture
def srv(oscar_server):
    """The session's v4 cluster, with default job settings and zero counts."""
    oscar_server.configure(**DEFAULTS)
    oscar_server.reset_counts()
    return oscar_server


def basic(server) -> oscar.Oscar:
    return oscar.Oscar(oscar.Cluster("test", server.url, "basic", server.user, server.password))


def oidc(server, monkeypatch, token: str | None = None) -> oscar.Oscar:
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", token or server.oidc_token)
    return oscar.Oscar(oscar.Cluster(None, server.url, "oidc"))


def write_fdl(folder: Path, *names: str, vo: str = "", cluster: str = "test", **extra: str) -> Path:
    (folder / "script.sh").write_text("#!/bin/sh\ntr a-z A-Z < $INPUT_FILE_PATH > $TMP_OUTPUT_DIR/out\n")
    text = "functions:\n  oscar:\n"
    for name in names:
        text += (f"  - {cluster}:\n      name: {name}\n      image: ghcr.io/grycap/alpine\n      cpu: '0.5'\n"
                 f"      memory: 256Mi\n      script: script.sh\n"
                 f"      input:\n      - storage_provider: minio.default\n        path: {name}/in\n"
                 f"      output:\n      - storage_provider: minio.default\n        path: {name}/out\n")
        text += f"      vo: {vo}\n" if vo else ""
        text += "".join(f"      {k}: {v}\n" for k, v in extra.items())
    path = folder / "fdl.yml"
    path.write_text(text)
    return path


def deployed(server, tmp_path, *, vo: str = "", client: oscar.Oscar | None = None) -> str:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    (client or basic(server)).deploy(fdl.load(write_fdl(tmp_path, name, vo=vo)))
    return name


def inputs(folder: Path, *names: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"hello from {name}\n")
    return [str(folder / n) for n in names]


# ----------------------------------------------------------------------------- clusters


def test_clusters_come_from_the_config_the_environment_or_a_url(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[oscar]\ndefault = "egi"\n[oscar.clusters.egi]\nendpoint = "https://oscar.example.org/"\n'
                   'auth = "basic"\nuser = "u"\npassword = "pw-secret-1"\nssl_verify = false\n')
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(cfg))
    config._cached = None
    egi = oscar.resolve_cluster()
    assert (egi.name, egi.endpoint, egi.auth, egi.ssl_verify) == ("egi", "https://oscar.example.org", "basic", False)
    assert "pw-secret-1" not in secrets.redact("pw-secret-1")
    url = oscar.resolve_cluster("https://other.example.org")
    assert (url.name, url.auth) == (None, "oidc")
    with pytest.raises(ConfigError, match="unknown OSCAR cluster 'nope' .known: egi"):
        oscar.resolve_cluster("nope")
    with pytest.raises(ConfigError, match="not in the URL"):
        oscar.resolve_cluster("https://u:p@oscar.example.org")


def test_oscar_user_without_password_is_refused(monkeypatch):
    monkeypatch.setenv("OSCAR_ENDPOINT", "https://oscar.example.org")
    monkeypatch.setenv("OSCAR_USER", "me")
    with pytest.raises(ConfigError, match="OSCAR_USER is set without OSCAR_PASSWORD"):
        oscar.resolve_cluster()


# ----------------------------------------------------------------------------- deploy


def test_deploy_creates_then_leaves_unchanged_then_updates(srv, tmp_path):
    client = basic(srv)
    name = f"svc-{uuid.uuid4().hex[:8]}"
    path = write_fdl(tmp_path, name)
    assert [(d.name, d.action) for d in client.deploy(fdl.load(path))] == [(name, "created")]
    assert [d.action for d in client.deploy(fdl.load(path))] == ["unchanged"]
    assert srv.count("/system/services") == 3  # GET (404) and POST, then one GET: nothing sent again
    write_fdl(tmp_path, name, log_level="DEBUG")
    assert [d.action for d in client.deploy(fdl.load(path))] == ["updated"]
    assert client.service(name, refresh=True)["log_level"] == "DEBUG"


def test_a_bad_service_deploys_nothing_and_sends_nothing(srv, tmp_path):
    a, b = f"svc-{uuid.uuid4().hex[:8]}", "B" * 45
    with pytest.raises(ValidationError, match="nothing deployed"):
        fdl.load(write_fdl(tmp_path, a, b))
    assert srv.count("/system") == 0
    assert oscar.Oscar.exists(basic(srv), a) is None


def test_v3_fields_sent_to_a_v4_cluster_are_named(srv, tmp_path):
    client = basic(srv)
    name = f"svc-{uuid.uuid4().hex[:8]}"
    done = client.deploy(fdl.load(write_fdl(tmp_path, name, delegation="random")))
    assert "ignores delegation" in done[0].notes[0] and "federation" in done[0].notes[0]


def test_ls_show_and_rm_hide_the_service_token(srv, tmp_path):
    client = basic(srv)
    name = deployed(srv, tmp_path, client=client)
    assert name in [s["name"] for s in client.services()]
    shown = oscar.hide(client.service(name))
    assert shown["token"] == "***" and client.service(name)["token"] not in json.dumps(shown)
    client.remove(name)
    with pytest.raises(ServiceError, match=f"no service named '{name}'"):
        client.service(name, refresh=True)


# ----------------------------------------------------------------------------- auth


def test_an_expired_token_is_explained_as_401(srv, tmp_path, monkeypatch):
    token = srv.add_token(f"late-{uuid.uuid4().hex[:6]}@egi.eu", (VO,), lifetime=-60)
    client = oidc(srv, monkeypatch, token)
    with pytest.raises(Exception, match="expired") as info:
        client.services()
    assert token not in str(info.value)


def test_a_403_says_the_identity_is_not_in_the_service_vo(srv, tmp_path, monkeypatch):
    name = deployed(srv, tmp_path, vo=VO)
    client = oidc(srv, monkeypatch, srv.other_vo_token)
    with pytest.raises(AuthError, match=f"HTTP 403: .*member of VO {VO}"):
        client.service(name)


def test_job_with_a_fresh_oidc_user_is_provisioned_first(srv, tmp_path, monkeypatch):
    name = deployed(srv, tmp_path, vo=VO)
    sub = f"new-{uuid.uuid4().hex[:6]}@egi.eu"
    token = srv.add_token(sub, (VO,))
    client = oidc(srv, monkeypatch, token)
    srv.reset_counts()
    job = client.submit(name, b"aGVsbG8=")
    assert job and job in {j["name"] for j in srv.jobs()}
    assert srv.count("/job/") == 1 and srv.count("/system/config") == 1


# ----------------------------------------------------------------------------- sync runs


def test_a_cold_start_is_retried(srv, tmp_path):
    name = deployed(srv, tmp_path)
    srv.configure(cold_starts=2)
    results = oscar.run_sync(basic(srv), name, "hello", str(tmp_path / "out"), progress=False)
    assert (tmp_path / "out" / results[0].location.rsplit("/", 1)[-1]).read_text() == "HELLO"
    assert srv.count("/run/") == 3


def test_sync_answers_are_decoded_one_file_a_zip_or_plain_text(srv, tmp_path):
    name = deployed(srv, tmp_path)
    client = basic(srv)
    (tmp_path / "in.txt").write_text("abc\n")
    one = oscar.run_sync(client, name, str(tmp_path / "in.txt"), str(tmp_path / "one"), progress=False)
    assert [Path(r.location).read_text() for r in one] == ["ABC\n"]
    srv.configure(outputs=3)
    several = oscar.run_sync(client, name, str(tmp_path / "in.txt"), str(tmp_path / "zip"), progress=False)
    assert len(several) == 3 and all(Path(r.location).name.endswith(".out") for r in several)  # the zip, unpacked
    assert all(Path(r.location).read_text() == "ABC\n" for r in several)
    assert not list((tmp_path / "zip").rglob("*.zip"))
    srv.configure(outputs=0)
    text = oscar.run_sync(client, name, '{"greeting": "hi"}', str(tmp_path / "text"), progress=False)
    assert Path(text[0].location).read_text() == '{"GREETING": "HI"}' and text[0].media_type == "text/plain"


def test_a_cluster_without_run_says_use_async_before_sending(oscar_factory, tmp_path):
    server = oscar_factory(version="v3", knative=False, job_seconds=0.3)
    name = deployed(server, tmp_path)
    with pytest.raises(ServiceError, match="no serverless backend .* --async"):
        oscar.run_sync(basic(server), name, "hello", str(tmp_path / "out"), progress=False)
    assert server.count("/run/") == 0


def test_answer_decoding_rules():
    import base64

    assert oscar.decode_answer(b"done") == ("output.txt", b"done", "text/plain")
    assert oscar.decode_answer(base64.b64encode(b"\x89PNG....")) [0] == "output.png"
    assert oscar.decode_answer(base64.b64encode(b"a text file\n")) == ("output.txt", b"a text file\n", "text/plain")


# ----------------------------------------------------------------------------- batches


def test_a_batch_with_one_failing_input_finishes_the_others(srv, tmp_path):
    name = deployed(srv, tmp_path)
    srv.configure(fail_inputs_matching="^bad")
    files = inputs(tmp_path / "in", "a.txt", "bad.txt", "c.txt")
    items = oscar_batch.run_batch(basic(srv), name, files, str(tmp_path / "out"), progress=False, timeout=120)
    assert [i.status for i in items] == ["succeeded", "failed", "succeeded"]
    assert (tmp_path / "out" / "a" / "a.out").read_text() == "HELLO FROM A.TXT\n"
    assert (tmp_path / "out" / "c" / "results.json").is_file() and not (tmp_path / "out" / "bad").exists()
    assert "Script failed on input 'bad.txt'" in items[1].logs and "bad.txt" in items[1].error
    by_input = {j["input"]: j["name"] for j in srv.jobs() if j["service"] == name}
    assert [i.job for i in items] == [by_input["a.txt"], by_input["bad.txt"], by_input["c.txt"]]
    assert srv.count("/system/logs") >= 2 and "a.txt" in oscar_batch.table(items)


def test_a_rerun_skips_inputs_whose_outputs_exist(srv, tmp_path):
    name = deployed(srv, tmp_path)
    files = inputs(tmp_path / "in", "a.txt", "b.txt")
    out = tmp_path / "out"
    first = oscar_batch.run_batch(basic(srv), name, files, str(out), progress=False, timeout=120)
    assert [i.status for i in first] == ["succeeded", "succeeded"]
    uploads = srv.count(f"s3:/{name}/in/")
    assert uploads == 2
    (out / "b" / "results.json").unlink()  # b's results lost locally; its outputs are still in the bucket
    files += inputs(tmp_path / "in", "c.txt")
    again = oscar_batch.run_batch(basic(srv), name, files, str(out), progress=False, timeout=120)
    assert [i.status for i in again] == ["skipped", "succeeded", "succeeded"]
    assert again[1].job == "(earlier run)" and (out / "b" / "results.json").is_file()
    assert srv.count(f"s3:/{name}/in/") == uploads + 1  # only c.txt was uploaded


def test_text_inputs_go_through_job(srv, tmp_path, monkeypatch):
    client = oidc(srv, monkeypatch)
    name = deployed(srv, tmp_path, client=client)
    items = oscar_batch.run_batch(client, name, ["some words"], str(tmp_path / "out"), progress=False, timeout=120)
    assert items[0].status == "succeeded" and items[0].job
    assert Path(items[0].results[0].location).read_text() == "SOME WORDS"
    assert srv.count("/job/") == 1


def test_a_missing_input_file_is_refused_before_anything_is_sent(srv, tmp_path):
    with pytest.raises(ValidationError, match="no such file"):
        oscar_batch.Batch(basic(srv), "whatever", [str(tmp_path / "nope.csv")], str(tmp_path / "out"))
    assert srv.count("/") == 0


# ----------------------------------------------------------------------------- logs


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_job_lists_are_read_in_both_shapes_and_every_page(oscar_factory, tmp_path, version):
    server = oscar_factory(version=version, knative=True, job_seconds=0.2, page_size=2)
    client = basic(server)
    name = deployed(server, tmp_path, client=client)
    files = inputs(tmp_path / "in", *(f"f{n}.txt" for n in range(5)))
    items = oscar_batch.run_batch(client, name, files, str(tmp_path / "out"), progress=False, timeout=120)
    assert all(i.status == "succeeded" for i in items)
    server.reset_counts()
    jobs = client.jobs(name)
    assert len(jobs) == 5 and {info["status"] for info in jobs.values()} == {"Succeeded"}
    assert server.count(f"/system/logs/{name}") == (3 if version == "v4" else 1)
    job = next(iter(jobs))
    assert "supervisor" in client.job_logs(name, job)


def test_job_list_shapes():
    flat = {"svc-1": {"status": "Running"}}
    paged = {"jobs": {"svc-2": {"status": "Pending"}}, "next_page": "abc", "remaining_jobs": 3}
    assert oscar.jobs_from(flat) == (flat, None)
    assert oscar.jobs_from(paged) == ({"svc-2": {"status": "Pending"}}, "abc")
    assert oscar.jobs_from({"jobs": {}, "remaining_jobs": 0}) == ({}, None)


# ----------------------------------------------------------------------------- secrets


def test_no_password_token_or_key_in_errors_or_logs(srv, tmp_path, monkeypatch, caplog):
    client = basic(srv)
    name = deployed(srv, tmp_path, client=client)
    service_token = client.service(name)["token"]
    with caplog.at_level(logging.DEBUG):
        oscar.run_sync(client, name, "hi", str(tmp_path / "s"), progress=False)
        srv.configure(fail_inputs_matching="x")
        items = oscar_batch.run_batch(client, name, inputs(tmp_path / "in", "x.txt"), str(tmp_path / "o"),
                                      progress=False, timeout=60)
        wrong = oscar.Oscar(oscar.Cluster("test", srv.url, "basic", srv.user, srv.password + "-wrong"))
        with pytest.raises(AuthError) as info:
            wrong.services()
    minio = client.minio()
    text = caplog.text + str(info.value) + json.dumps([i.row() for i in items]) + items[0].logs
    for value in (srv.password, service_token, minio["secret_key"], srv.password + "-wrong"):
        assert value not in text
    assert "refused user 'oscar'" in str(info.value)
