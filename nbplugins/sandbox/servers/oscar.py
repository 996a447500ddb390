"""An OSCAR REST API test server, faithful to grycap/oscar v3.x and v4.1 (``pkg/handlers``).

Run as a process: ``python -m nbplugins.sandbox.servers.oscar --port P --config FILE`` (FILE is
JSON, 0600, written by :func:`write_config` for the sandbox and ``tests/servers/oscar_fixtures.py``:
user, password, version ``v3|v4``, knative, the S3 server's internal endpoint and keys, the OIDC
tokens it accepts, job settings). It serves:

- ``/health``; ``/system/info``, ``/system/config`` and ``/system/config/`` (``minio_provider``
  with the admin keys for Basic, the user's own keys for OIDC); services CRUD with OSCAR's codes
  (201 create, 204 update/delete, 404 unknown, 400 invalid, duplicate 400 on v4 and 409 on v3 as
  in ``create.go``); ``/system/logs/{svc}`` paginated on v4 (``jobs``/``next_page``/
  ``remaining_jobs``, 70 a page, ordered by job name as Kubernetes lists) and a flat map on v3;
  job logs as plain text; DELETE of one job or of the completed ones (``?all=true``: all).
- ``/system/*`` takes Basic (the configured user) or a Bearer token from the static list (a JWT;
  ``exp`` and issuer checked, VOs from ``entitlements`` or ``eduperson_entitlement``
  ``urn:mace:egi.eu:group:<VO>:...``); a token in none of the cluster's ``oidc_groups`` is 401.
  The first ``/system`` call with a token provisions the user's MinIO user.
- ``/run/{svc}`` (only when knative; otherwise 404 as gin answers an unregistered route) and
  ``/job/{svc}`` take the service's 64-hex token or an OIDC token, never Basic (401). A service
  with ``vo`` answers 403 to tokens outside that VO (OSCAR answers 401 or 404 depending on the
  version; the issue asks for 403). ``/job`` with an unprovisioned OIDC user is 403
  ``MinIO user not provisioned for <sub>; submit a direct request first``.
- ``/run`` applies the FaaS Supervisor's rules: the body is base64 (or JSON, kept as is), the
  answer is base64 of the one output file, base64 of a zip for several, the script's stdout when
  there is none; the first ``cold_starts`` calls answer 503, 502, 504 in turn.
- ``POST /job/{svc}`` answers 201 with an empty body; a MinIO event body reads that object.
  Objects uploaded under a service's MinIO input path start jobs (the bucket is listed every
  ``poll_seconds``, as MinIO's webhook would notify). Jobs go Pending -> Running -> Succeeded or
  Failed (``pending_seconds``, then ``job_seconds`` in at most ``slots`` parallel slots). The
  work: ``<output path>/<input stem>.out`` = the input upper-cased (``outputs`` > 1 adds
  ``<stem>.<i>.out``); an input whose name matches the ``fail_inputs_matching`` regex fails with
  an ``ERROR`` log line and no output.

Test-only control endpoints (no auth): ``POST /_control/configure`` (job settings),
``GET /_control/counts`` (API requests by path; S3 requests through the counting proxy that
``minio_provider.endpoint`` points at), ``POST /_control/reset_counts``, ``GET /_control/jobs``,
``POST /_control/tokens`` (accept one more token). Nothing here logs a token or key.

Over 600 lines because it is one contract: the REST API, the FaaS Supervisor's ``/run`` rules
and the job life cycle share the same state and are proven together by ``oscar-python`` and
``reference/oscar-api.yaml``; split, each half would only be read with the other.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import io
import json
import os
import re
import secrets
import threading
import time
import uuid
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from nbplugins.sandbox.servers.faultproxy import FaultProxy

ADMIN_OWNER = "cluster_admin"
EGI_PREFIX = "urn:mace:egi.eu:group:"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
COMMON_FIELDS = {
    "name", "cluster_id", "memory", "cpu", "total_memory", "total_cpu", "enable_gpu", "enable_sgx",
    "image_prefetch", "synchronous", "rescheduler_threshold", "log_level", "image", "alpine", "file_stage_in",
    "input", "output", "script", "image_pull_secrets", "expose", "environment", "annotations", "vo", "labels",
    "storage_providers", "clusters", "interlink_node_name", "visibility", "allowed_users", "isolation_level", "mount",
}
VERSION_FIELDS = {"v3": {"replicas", "delegation"}, "v4": {"federation", "volume", "kserve"}}
STRING_FIELDS = ("name", "image", "script", "cpu", "memory", "vo", "visibility", "log_level", "isolation_level")
COLD_STATUSES = (503, 502, 504)


def _now() -> float:
    return time.time()


def _rfc3339(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Job:
    name: str
    service: str
    input_name: str
    bucket: str | None = None  # where to read the input (storage events)
    key: str | None = None
    data: bytes | None = None  # the event body (unknown events)
    owner: str = ""
    status: str = "Pending"
    created: float = field(default_factory=_now)
    started: float | None = None
    finished: float | None = None
    log: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass
class Settings:
    job_seconds: float = 0.5
    pending_seconds: float = 0.1
    slots: int = 4
    fail_inputs_matching: str = ""
    cold_starts: int = 0
    outputs: int = 1
    poll_seconds: float = 0.2
    page_size: int = 70


class State:
    """Everything the server knows: config, services, jobs, users, counts."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.version = cfg.get("version", "v4")
        self.knative = bool(cfg.get("knative", True))
        self.settings = Settings(**cfg.get("settings", {}))
        self.tokens: dict[str, dict] = {u["token"]: u for u in cfg.get("oidc", {}).get("users", [])}
        self.issuers = set(cfg.get("oidc", {}).get("issuers", []))
        self.groups = list(cfg.get("oidc", {}).get("groups", []))
        self.services: dict[str, dict] = {}
        self.jobs: dict[str, Job] = {}
        self.provisioned: set[str] = set()
        self.seen: dict[str, set[tuple[str, str]]] = {}  # service -> {(key, etag, last-modified)}: every upload is an event, as MinIO notifies
        self.api_counts: Counter[str] = Counter()
        self.lock = threading.RLock()
        self.finishing: set[str] = set()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="job")
        self.s3_public = cfg["s3"]["public_endpoint"]
        import boto3  # noqa: PLC0415 - slow import, only in the server process

        self.s3 = boto3.client("s3", endpoint_url=cfg["s3"]["endpoint"], region_name="us-east-1",
                               aws_access_key_id=cfg["s3"]["access_key"],
                               aws_secret_access_key=cfg["s3"]["secret_key"])

    # -- identity

    def user_for(self, token: str) -> tuple[int, str, dict | None]:
        """(status, message, user) for a Bearer token: 401 unless listed, unexpired, allowed issuer and group."""
        user = self.tokens.get(token)
        if user is None:
            return 401, "", None
        claims = jwt.decode(token, options={"verify_signature": False})
        if claims.get("exp", float("inf")) < _now():
            return 401, "", None
        if self.issuers and claims.get("iss") not in self.issuers:
            return 401, f"'{claims.get('iss')}' is not listed as an authorized issuer", None
        vos = groups_of(claims)
        if self.groups and not set(vos) & set(self.groups):
            return 401, "", None
        return 200, "", {**user, "sub": claims.get("sub", ""), "vos": vos}

    def may_use(self, service: dict, user: dict | None) -> str:
        """Why an OIDC user may not use ``service`` ('' when they may); Basic and service tokens may."""
        if user is None:
            return ""
        if service.get("vo") and service["vo"] not in user["vos"]:
            return f"this user isn't enrolled on the vo: {service['vo']}"
        owner = service.get("owner")
        if owner in (ADMIN_OWNER, user["sub"]) or service.get("visibility") == "public":
            return ""
        if service.get("visibility") == "restricted" and user["sub"] not in service.get("allowed_users", []):
            return f"User {user['sub']} doesn't have permision to get this service"
        if service.get("visibility") == "private" and not service.get("vo"):
            return f"User {user['sub']} doesn't have permision to get this service"
        return ""

    # -- services

    def normalise(self, body: Any, owner: str, old: dict | None = None) -> tuple[dict | None, str]:
        """A service as OSCAR stores it, or (None, why it is invalid)."""
        if not isinstance(body, dict):
            return None, "The service specification is not valid: expected a JSON object"
        for name in STRING_FIELDS:
            if name in body and not isinstance(body[name], str):
                kind = type(body[name]).__name__
                return None, (f"The service specification is not valid: json: cannot unmarshal {kind} "
                              f"into Go struct field Service.{name} of type string")
        for name in ("name", "image", "script"):
            if not body.get(name):
                return None, (f"The service specification is not valid: Key: 'Service.{name.capitalize()}' "
                              f"Error:Field validation for '{name.capitalize()}' failed on the 'required' tag")
        if len(body["name"]) > 39:
            return None, ("The service specification is not valid: Key: 'Service.Name' Error:Field validation "
                          "for 'Name' failed on the 'max' tag")
        if not DNS_LABEL.match(body["name"]):
            return None, f"Error creating the service: invalid name '{body['name']}': must be a DNS-1123 label"
        known = COMMON_FIELDS | VERSION_FIELDS.get(self.version, set())
        svc = {k: v for k, v in body.items() if k in known}
        for io_key in ("input", "output"):
            items = svc.get(io_key) or []
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                return None, f"The service specification is not valid: '{io_key}' must be a list of objects"
            for item in items:
                path = str(item.get("path", "")).strip(" /")
                if not path:
                    return None, f"{io_key} path cannot be empty"
                provider = str(item.get("storage_provider", "minio.default"))
                if io_key == "input" and provider.split(".")[0] not in ("minio", "webdav", "rucio"):
                    return None, "unrecognized input (valid inputs are MinIO and dCache)"
                if self.version == "v4" and "/" not in path and provider.startswith(("minio", "s3")):
                    path = f"{svc['name']}/{path}"
                item["path"] = path
            svc[io_key] = items
        svc.setdefault("memory", "256Mi")
        svc.setdefault("cpu", "0.2")
        svc["visibility"] = svc.get("visibility") or "private"
        level = str(svc.get("log_level", "")).upper()
        svc["log_level"] = level if level in ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"
        svc["labels"] = {**(svc.get("labels") or {}), "oscar_service": svc["name"], "com.oscar.user.service": "true"}
        svc.setdefault("annotations", {})
        svc.setdefault("allowed_users", [])
        svc.setdefault("vo", "")
        env = svc.get("environment") or {}
        svc["environment"] = {"variables": env.get("variables") or {},
                              "secrets": {k: "" for k in (env.get("secrets") or {})}}
        providers = svc.get("storage_providers") or {}
        providers.setdefault("minio", {})["default"] = {
            "endpoint": self.s3_public, "verify": True, "access_key": "hidden", "secret_key": "hidden",
            "region": "us-east-1"}
        svc["storage_providers"] = providers
        svc["owner"] = old["owner"] if old else owner
        svc["token"] = old["token"] if old else secrets.token_hex(32)
        return svc, ""

    def make_buckets(self, svc: dict) -> None:
        """Create input and output buckets; remember what the input paths hold already."""
        for item in svc["input"] + svc["output"]:
            if item.get("storage_provider", "minio.default").startswith("minio"):
                bucket = item["path"].split("/", 1)[0]
                with contextlib.suppress(Exception):
                    self.s3.create_bucket(Bucket=bucket)
        self.seen[svc["name"]] = set(self.list_inputs(svc))

    def list_inputs(self, svc: dict) -> list[tuple[str, str]]:
        """(key, etag and last-modified) of every object under the service's MinIO input paths that passes its filters."""
        found = []
        for item in svc["input"]:
            if not item.get("storage_provider", "minio.default").startswith("minio"):
                continue
            bucket, _, folder = item["path"].partition("/")
            prefix = f"{folder}/" if folder else ""
            try:
                pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for page in pages:
                    for obj in page.get("Contents", []):
                        name = obj["Key"].rsplit("/", 1)[-1]
                        if _passes(name, item) and not obj["Key"].endswith("/"):
                            found.append((f"{bucket}/{obj['Key']}", f"{obj.get('ETag', '')}@{obj.get('LastModified', '')}"))
            except Exception:  # noqa: BLE001 - a missing bucket triggers nothing, as in MinIO
                continue
        return found

    # -- jobs

    def poll_inputs(self) -> None:
        """What MinIO's webhook does: one job per new object in an input path."""
        while True:
            time.sleep(self.settings.poll_seconds)
            with self.lock:
                services = list(self.services.values())
            for svc in services:
                for key, etag in self.list_inputs(svc):
                    with self.lock:
                        if svc["name"] not in self.services or (key, etag) in self.seen.setdefault(svc["name"], set()):
                            continue
                        self.seen[svc["name"]].add((key, etag))
                        bucket, _, obj = key.partition("/")
                        job = Job(str(uuid.uuid4()), svc["name"], obj.rsplit("/", 1)[-1], bucket=bucket, key=obj)
                        self.jobs[job.name] = job

    def schedule(self) -> None:
        """Move jobs Pending -> Running -> Succeeded/Failed within the configured slots and times."""
        while True:
            time.sleep(0.05)
            now = _now()
            with self.lock:
                s = self.settings
                running = sum(1 for j in self.jobs.values() if j.status == "Running")
                for job in sorted(self.jobs.values(), key=lambda j: j.created):
                    if job.status == "Pending" and running < s.slots and now - job.created >= s.pending_seconds:
                        job.status, job.started = "Running", now
                        job.log = [_line("INFO", "SUPERVISOR: Initializing Binary supervisor")]
                        running += 1
                due = [j for j in self.jobs.values() if j.status == "Running" and now - j.started >= s.job_seconds]
            for job in due:
                if job.name not in self.finishing:
                    self.finishing.add(job.name)
                    self.pool.submit(self._finish_once, job)

    def _finish_once(self, job: Job) -> None:
        try:
            self.finish(job)
        finally:
            self.finishing.discard(job.name)

    def finish(self, job: Job) -> None:
        """The job's work: read the input, write the outputs (or fail), then the final status."""
        with self.lock:
            svc = self.services.get(job.service)
            settings = self.settings
        log = list(job.log) or [_line("INFO", "SUPERVISOR: Initializing Binary supervisor")]
        ok = svc is not None
        data = b""
        if ok and job.key is not None:
            log.append(_line("INFO", f"Downloading item from bucket '{job.bucket}' with key '{job.key}'"))
            try:
                data = self.s3.get_object(Bucket=job.bucket, Key=job.key)["Body"].read()
            except Exception as exc:  # noqa: BLE001
                ok = False
                log.append(_line("ERROR", f"Error downloading input: {type(exc).__name__}"))
        elif job.data is not None:
            data = job.data
        pattern = settings.fail_inputs_matching
        if ok and pattern and re.search(pattern, job.input_name):
            ok = False
            log.append(_line("ERROR", f"Script failed on input '{job.input_name}': exit status 1"))
        outputs: list[str] = []
        if ok:
            log.append(_line("INFO", "Script file found in '/oscar/config/script.sh'"))
            for name, content in _work(job.input_name, data, settings.outputs):
                for item in svc["output"]:
                    if not _passes(name, item) or not item.get("storage_provider", "minio.default").startswith("minio"):
                        continue
                    bucket, _, folder = item["path"].partition("/")
                    key = f"{folder}/{name}" if folder else name
                    try:
                        self.s3.put_object(Bucket=bucket, Key=key, Body=content)
                    except Exception as exc:  # noqa: BLE001
                        ok = False
                        log.append(_line("ERROR", f"Error uploading output: {type(exc).__name__}"))
                        continue
                    outputs.append(f"{bucket}/{key}")
                    log.append(_line("INFO", f"Uploading file '{name}' to bucket '{bucket}' with key '{key}'"))
        with self.lock:
            job.log, job.outputs = log, outputs
            job.status, job.finished = ("Succeeded" if ok else "Failed"), _now()

    def job_info(self, job: Job) -> dict:
        info = {"status": job.status, "creation_time": _rfc3339(job.created)}
        if job.started is not None:
            info["start_time"] = _rfc3339(job.started)
        if job.finished is not None:
            info["finish_time"] = _rfc3339(job.finished)
        return info


def groups_of(claims: dict) -> list[str]:
    """VOs from EGI entitlements, as OSCAR's getGroupsEGI reads them."""
    urns = list(claims.get("entitlements") or []) + list(claims.get("eduperson_entitlement") or [])
    vos = []
    for urn in urns:
        fields = str(urn).strip().lower().split(":")
        if str(urn).lower().startswith(EGI_PREFIX) and len(fields) >= 5:
            vos.append(fields[4])
    return vos


def _passes(name: str, item: dict) -> bool:
    suffixes, prefixes = item.get("suffix") or [], item.get("prefix") or []
    return (not suffixes or any(name.endswith(s) for s in suffixes)) and \
        (not prefixes or any(name.startswith(p) for p in prefixes))


def _work(input_name: str, data: bytes, outputs: int) -> list[tuple[str, bytes]]:
    stem = PurePosixPath(input_name).stem or input_name
    result = data.upper()
    return [(f"{stem}.out" if i == 0 else f"{stem}.{i}.out", result) for i in range(outputs)]


def _line(level: str, message: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    return f"{stamp} - supervisor - {level} - {message}"


def decode_event(body: bytes) -> tuple[bytes, dict | None]:
    """The supervisor's UnknownEvent: JSON stays as is, anything else is base64-decoded."""
    try:
        parsed = json.loads(body)
    except ValueError:
        try:
            return base64.b64decode(body, validate=False), None
        except (binascii.Error, ValueError):
            return body, None
    return body, parsed if isinstance(parsed, dict) else None


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:  # quiet: tokens may be in requests
            pass

        # -- plumbing

        def _send(self, status: int, body: Any = None, ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            if body is None:
                data = b""
            elif isinstance(body, bytes):
                data = body
            elif isinstance(body, str):
                data, ctype = body.encode(), ("text/plain; charset=utf-8" if ctype == "application/json" else ctype)
            else:
                data = json.dumps(body).encode()
            self.send_response(status)
            if data or isinstance(body, str):
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _bearer(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else None

        def _system_auth(self) -> tuple[bool, dict | None]:
            """Basic (admin) or an OIDC token; answers 401 itself when neither holds."""
            token = self._bearer()
            if token is not None:
                status, message, user = state.user_for(token)
                if user is None:
                    self._send(status, message or None)
                    return False, None
                with state.lock:
                    state.provisioned.add(user["sub"])
                return True, user
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                with contextlib.suppress(binascii.Error, ValueError):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if secrets.compare_digest(f"{user}:{password}", f"{state.cfg['user']}:{state.cfg['password']}"):
                        return True, None
            self._send(401, None, headers={"WWW-Authenticate": 'Basic realm="Authorization Required"'})
            return False, None

        def _invoke_auth(self, svc: dict) -> tuple[bool, dict | None]:
            """Service token or OIDC token (never Basic) for /run and /job."""
            token = self._bearer()
            if token is None:
                self._send(401)
                return False, None
            if len(token) == 64:
                if secrets.compare_digest(token, svc["token"]):
                    return True, None
                self._send(401)
                return False, None
            status, message, user = state.user_for(token)
            if user is None:
                self._send(status, message or None)
                return False, None
            why = state.may_use(svc, user)
            if why:
                self._send(403, why)
                return False, None
            return True, user

        # -- routing

        def do_GET(self) -> None:  # noqa: N802
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._route("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._route("DELETE")

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
            parts = [p for p in path.split("/") if p]
            if parts[:1] == ["_control"]:
                return self._control(method, parts[1:] if len(parts) > 1 else [""])
            with state.lock:
                state.api_counts[path] += 1
            body = self._body()
            if path == "/health" and method == "GET":
                return self._send(200, "Ok")
            if parts[:1] == ["run"] and len(parts) == 2 and method == "POST":
                return self._run(parts[1], body) if state.knative else self._send(404, "404 page not found")
            if parts[:1] == ["job"] and len(parts) == 2 and method == "POST":
                return self._job(parts[1], body)
            if parts[:1] != ["system"] or len(parts) < 2:
                return self._send(404, "404 page not found")
            ok, user = self._system_auth()
            if not ok:
                return None
            head = parts[1]
            if head == "info" and method == "GET":
                return self._send(200, self._info())
            if head == "config" and method == "GET" and len(parts) == 2:
                return self._send(200, self._config(user))
            if head == "services":
                return self._services(method, parts[2:], body, user)
            if head == "logs" and len(parts) >= 3:
                return self._logs(method, parts[2], parts[3] if len(parts) > 3 else None, query, user)
            return self._send(404, "404 page not found")

        def _info(self) -> dict:
            info = {"version": "v4.1.2" if state.version == "v4" else "v3.5.3", "git_commit": "0123abcd",
                    "architecture": "amd64", "kubernetes_version": "v1.29.2"}
            if state.knative:
                info["serverless_backend"] = {"name": "Knative", "version": "1.13.1"}
            return info

        def _config(self, user: dict | None) -> dict:
            s3 = state.cfg["s3"]
            keys = (user["access_key"], user["secret_key"]) if user and user.get("access_key") else \
                (s3["access_key"], s3["secret_key"])
            config = {"name": "oscar", "namespace": "oscar", "services_namespace": "oscar-svc",
                      "gpu_available": False, "interLink_available": False, "yunikorn_enable": False,
                      "oidc_groups": state.groups}
            if state.knative:
                config["serverless_backend"] = "knative"
            return {"config": config,
                    "minio_provider": {"endpoint": state.s3_public, "verify": True, "access_key": keys[0],
                                       "secret_key": keys[1], "region": "us-east-1"},
                    "allowed_image_repositories": []}

        def _services(self, method: str, rest: list[str], body: bytes, user: dict | None) -> None:
            owner = user["sub"] if user else ADMIN_OWNER
            if not rest and method == "GET":
                with state.lock:
                    visible = [s for s in state.services.values() if not state.may_use(s, user)]
                return self._send(200, visible)
            if not rest and method in ("POST", "PUT"):
                try:
                    spec = json.loads(body or b"null")
                except ValueError as exc:
                    return self._send(400, f"The service specification is not valid: {exc}")
                name = spec.get("name") if isinstance(spec, dict) else None
                with state.lock:
                    old = state.services.get(name) if isinstance(name, str) else None
                if method == "PUT" and old is None:
                    return self._send(404)
                if method == "POST" and old is not None:
                    return self._send(400 if state.version == "v4" else 409,
                                      "A service with the provided name already exists")
                if old is not None and user is not None and old["owner"] not in (user["sub"], ADMIN_OWNER):
                    return self._send(403, f"User {user['sub']} doesn't have permision to modify this service")
                svc, why = state.normalise(spec, owner, old)
                if svc is None:
                    return self._send(400, why)
                if user is not None and svc.get("vo") and svc["vo"] not in user["vos"]:
                    return self._send(400, f"this user isn't enrolled on the vo: {svc['vo']}")
                state.make_buckets(svc)
                with state.lock:
                    state.services[svc["name"]] = svc
                return self._send(201 if method == "POST" else 204)
            if len(rest) == 1 and method in ("GET", "DELETE"):
                with state.lock:
                    svc = state.services.get(rest[0])
                if svc is None:
                    return self._send(404)
                why = state.may_use(svc, user)
                if why:
                    return self._send(403, why)
                if method == "GET":
                    return self._send(200, svc)
                with state.lock:
                    state.services.pop(rest[0], None)
                    for name in [n for n, j in state.jobs.items() if j.service == rest[0]]:
                        del state.jobs[name]
                return self._send(204)
            return self._send(404, "404 page not found")

        def _logs(self, method: str, service: str, job_name: str | None, query: dict, user: dict | None) -> None:
            with state.lock:
                svc = state.services.get(service)
            if svc is None:
                return self._send(404)
            why = state.may_use(svc, user)
            if why:
                return self._send(403, why)
            with state.lock:
                jobs = sorted((j for j in state.jobs.values() if j.service == service), key=lambda j: j.name)
                if job_name is not None:
                    job = state.jobs.get(job_name)
                    if job is None or job.service != service:
                        return self._send(404)
                    if method == "DELETE":
                        del state.jobs[job_name]
                        return self._send(204)
                    return self._send(200, "\n".join(job.log) + ("\n" if job.log else ""), "text/plain; charset=utf-8")
                if method == "DELETE":
                    everything = query.get("all", "false").lower() == "true"
                    for job in jobs:
                        if everything or job.status == "Succeeded":
                            state.jobs.pop(job.name, None)
                    return self._send(204)
                if state.version == "v3":
                    return self._send(200, {j.name: state.job_info(j) for j in jobs})
                size = state.settings.page_size
                start = 0
                if query.get("page"):
                    try:
                        start = int(base64.urlsafe_b64decode(query["page"].encode()).decode())
                    except (ValueError, binascii.Error):
                        return self._send(400, "invalid continue token")
                page = jobs[start:start + size]
                answer: dict[str, Any] = {"jobs": {j.name: state.job_info(j) for j in page}}
                if start + size < len(jobs):
                    answer["next_page"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
                    answer["remaining_jobs"] = len(jobs) - start - size
                return self._send(200, answer)

        def _service_or_404(self, name: str) -> dict | None:
            with state.lock:
                svc = state.services.get(name)
            if svc is None:
                self._send(404)
            return svc

        def _job(self, name: str, body: bytes) -> None:
            svc = self._service_or_404(name)
            if svc is None:
                return
            ok, user = self._invoke_auth(svc)
            if not ok:
                return
            if user is not None and user["sub"] not in state.provisioned:
                return self._send(403, f"MinIO user not provisioned for {user['sub']}; submit a direct request first")
            data, event = decode_event(body)
            job = Job(str(uuid.uuid4()), name, f"event-file-{uuid.uuid4()}", data=data,
                      owner=user["sub"] if user else "")
            records = (event or {}).get("Records") or [{}]
            if records[0].get("eventSource") in ("minio:s3", "aws:s3"):
                s3 = records[0].get("s3", {})
                job.bucket, job.key, job.data = s3.get("bucket", {}).get("name"), s3.get("object", {}).get("key"), None
                job.input_name = str(job.key).rsplit("/", 1)[-1]
            with state.lock:
                state.jobs[job.name] = job
            return self._send(201)

        def _run(self, name: str, body: bytes) -> None:
            svc = self._service_or_404(name)
            if svc is None:
                return
            ok, _user = self._invoke_auth(svc)
            if not ok:
                return
            with state.lock:
                settings = state.settings
                if settings.cold_starts > 0:
                    settings.cold_starts -= 1
                    status = COLD_STATUSES[settings.cold_starts % len(COLD_STATUSES)]
                    return self._send(status, "upstream connect error or disconnect/reset before headers")
            data, _event = decode_event(body)
            if settings.fail_inputs_matching and re.search(settings.fail_inputs_matching,
                                                           data.decode("utf-8", "replace")):
                return self._send(500, _line("ERROR", "Script failed: exit status 1") + "\n")
            job = Job(str(uuid.uuid4()), name, f"event-file-{uuid.uuid4()}", data=data)
            files = _work(job.input_name, data, settings.outputs)
            state.finish(job)  # the supervisor uploads outputs to the output bucket on /run too
            if not files:
                return self._send(200, data.decode("utf-8", "replace").upper(), "text/plain; charset=utf-8")
            if len(files) == 1:
                return self._send(200, base64.b64encode(files[0][1]), "text/plain; charset=utf-8")
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                for fname, content in files:
                    archive.writestr(fname, content)
            return self._send(200, base64.b64encode(buffer.getvalue()), "text/plain; charset=utf-8")

        def _control(self, method: str, parts: list[str]) -> None:
            body = self._body()
            what = parts[0]
            with state.lock:
                if what == "configure" and method == "POST":
                    changes = json.loads(body or b"{}")
                    for key, value in changes.items():
                        if not hasattr(state.settings, key):
                            return self._send(400, f"unknown setting {key!r}")
                        setattr(state.settings, key, type(getattr(state.settings, key))(value))
                    return self._send(200, vars(state.settings))
                if what == "counts" and method == "GET":
                    s3 = Counter(urlsplit(r.path).path for r in list(proxy.requests)) if proxy else Counter()
                    return self._send(200, {"api": dict(state.api_counts), "s3": dict(s3)})
                if what == "reset_counts" and method == "POST":
                    state.api_counts.clear()
                    if proxy:
                        proxy.requests.clear()
                    return self._send(204)
                if what == "jobs" and method == "GET":
                    return self._send(200, [{"name": j.name, "service": j.service, "input": j.input_name,
                                             "status": j.status, "outputs": j.outputs, **state.job_info(j)}
                                            for j in state.jobs.values()])
                if what == "tokens" and method == "POST":
                    user = json.loads(body)
                    state.tokens[user["token"]] = user
                    return self._send(204)
            return self._send(404)

    proxy: FaultProxy | None = getattr(state, "proxy", None)
    return Handler


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    """Write the server's JSON settings (they hold the password and S3 keys) readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(cfg, handle)
    os.chmod(path, 0o600)  # an older file of the same name keeps its mode otherwise
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="JSON settings (0600)")
    args = parser.parse_args()
    with open(args.config) as handle:
        cfg = json.load(handle)
    proxy = None
    if cfg["s3"].get("count_requests"):  # a counting proxy in front of the S3 server, advertised to clients
        proxy = FaultProxy(int(cfg["s3"]["upstream_port"]))
        proxy.__enter__()
        cfg["s3"]["public_endpoint"] = proxy.url
    else:
        cfg["s3"]["public_endpoint"] = cfg["s3"]["endpoint"]
    state = State(cfg)
    state.proxy = proxy  # type: ignore[attr-defined]
    for target in (state.poll_inputs, state.schedule):
        threading.Thread(target=target, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
