"""OSCAR clusters: which one, how to authenticate, and a thin client over the shared HTTP client.

A cluster comes from ``[oscar.clusters.NAME]``, from ``OSCAR_ENDPOINT``/``OSCAR_USER``/
``OSCAR_PASSWORD``, or from a URL given with ``--cluster``; without a user, the token layer's
OIDC token is used. ``/system/*`` takes Basic auth or the OIDC Bearer token; ``/run`` and
``/job`` take the service's own token or the user's OIDC token, never Basic. With OIDC,
``/job`` answers 403 until the user has called ``/system`` once: the client makes that call
first. ``POST /job`` answers 201 with an empty body, so the job is found by listing the
service's jobs before and after. ``/system/logs/{svc}`` is read in both shapes (paginated since
v3.6, a flat map before). Batches are in :mod:`.oscar_batch`, the FDL in :mod:`.fdl`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import zipfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from nbplugins import config as config_mod
from nbplugins import secrets
from nbplugins.errors import AuthError, ConfigError, NbpluginsError, ServiceError, ValidationError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry
from nbplugins.services import fdl as fdl_mod
from nbplugins.services.jobs import State, state_of

log = logging.getLogger(__name__)

AUTH_MODES = ("basic", "oidc")
#: Fields of a service definition never shown as they are (credentials, the service token).
HIDDEN = fdl_mod.SECRET_FIELDS


@dataclass(frozen=True)
class Cluster:
    """Where an OSCAR cluster is and how to authenticate to its ``/system`` API."""

    name: str | None
    endpoint: str
    auth: str = "oidc"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_verify: bool = True

    @property
    def label(self) -> str:
        return self.name or self.endpoint


def _check_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: an OSCAR endpoint must be an http(s) URL")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: put the user and password in the config or OSCAR_USER/OSCAR_PASSWORD, "
                          "not in the URL")
    return url.rstrip("/")


def resolve_cluster(spec: str | None = None, *, cfg: config_mod.Config | None = None) -> Cluster:
    """The cluster for ``--cluster NAME|URL`` (None: ``[oscar] default``, ``OSCAR_ENDPOINT``, or the only one)."""
    cfg = cfg or config_mod.get()
    osc = cfg.oscar
    secrets.register(osc.password, "OSCAR_PASSWORD")
    for named in osc.clusters.values():
        secrets.register(named.password, "OSCAR cluster password")
    if spec and "://" in spec:
        return _env_cluster(_check_url(spec, "--cluster"), osc)
    name = spec or osc.default
    if name:
        found = osc.clusters.get(name)
        if found is None:
            known = ", ".join(sorted(osc.clusters)) or "none configured"
            raise ConfigError(f"unknown OSCAR cluster {name!r} (known: {known}); add [oscar.clusters.{name}] to "
                              f"{config_mod.config_path()} or pass --cluster URL")
        return _named_cluster(name, found)
    if osc.endpoint:
        return _env_cluster(_check_url(osc.endpoint, "OSCAR_ENDPOINT"), osc)
    if len(osc.clusters) == 1:
        return _named_cluster(*next(iter(osc.clusters.items())))
    raise ConfigError("no OSCAR cluster given: pass --cluster NAME|URL, set OSCAR_ENDPOINT, or set "
                      "[oscar] default = NAME in the config")


def _env_cluster(url: str, osc: config_mod.OscarConfig) -> Cluster:
    if osc.user and not osc.password:
        raise ConfigError("OSCAR_USER is set without OSCAR_PASSWORD; set both, or neither to use the OIDC token")
    auth = "basic" if osc.user else "oidc"
    return Cluster(None, url, auth, osc.user, osc.password, osc.ssl_verify)


def _named_cluster(name: str, c: config_mod.OscarCluster) -> Cluster:
    where = f"[oscar.clusters.{name}]"
    if not c.endpoint:
        raise ConfigError(f"{where} has no endpoint")
    auth = (c.auth or "oidc").lower()
    if auth not in AUTH_MODES:
        raise ConfigError(f"{where} auth = {c.auth!r}: use basic or oidc")
    if auth == "basic" and not (c.user and c.password):
        raise ConfigError(f"{where} auth = 'basic' needs user and password")
    return Cluster(name, _check_url(c.endpoint, f"{where} endpoint"), auth, c.user if auth == "basic" else None,
                   c.password if auth == "basic" else None, c.ssl_verify)


class _Basic:
    """Basic credentials as a token provider for :class:`HttpClient` (nothing to refresh)."""

    def __init__(self, user: str, password: str) -> None:
        from nbplugins.tokens import make_token

        secrets.register(password, "OSCAR password")
        self.token = make_token(base64.b64encode(f"{user}:{password}".encode()).decode(), f"OSCAR user {user}")

    def get(self, force_refresh: bool = False) -> Any:
        return self.token


def hide(definition: Any) -> Any:
    """A service definition fit to show: the service token and every credential replaced by ``***``."""
    if isinstance(definition, dict):
        out = {}
        for key, value in definition.items():
            if key in HIDDEN and isinstance(value, str) and value:
                out[key] = secrets.MARKER
            elif key == "secrets" and isinstance(value, dict):
                out[key] = {k: secrets.MARKER for k in value}
            else:
                out[key] = hide(value)
        return out
    if isinstance(definition, list):
        return [hide(v) for v in definition]
    return definition


def jobs_from(body: Any) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Jobs and the next page token from a ``/system/logs/{svc}`` answer in either shape.

    Since v3.6: ``{"jobs": {name: info}, "next_page": token, "remaining_jobs": n}``; before: the
    flat map ``{name: info}``.
    """
    if not isinstance(body, dict):
        raise ServiceError(f"OSCAR answered a job list that is not a JSON object ({type(body).__name__})")
    if isinstance(body.get("jobs"), dict) and ("next_page" in body or "remaining_jobs" in body
                                               or all(isinstance(v, dict) for v in body["jobs"].values())):
        token = body.get("next_page") or None
        remaining = body.get("remaining_jobs")
        if isinstance(remaining, int) and remaining <= 0:
            token = None
        return {str(k): v for k, v in body["jobs"].items() if isinstance(v, dict)}, token
    return {str(k): v for k, v in body.items() if isinstance(v, dict)}, None


def _differs(desired: Any, existing: Any) -> bool:
    """True when ``existing`` lacks something of ``desired`` (the server adds fields of its own)."""
    if isinstance(desired, dict):
        if not isinstance(existing, dict):
            return True
        return any(_differs(v, existing.get(k)) for k, v in desired.items() if v not in (None, {}, []))
    if isinstance(desired, list):
        return not isinstance(existing, list) or len(desired) != len(existing) or any(
            _differs(d, e) for d, e in zip(desired, existing, strict=True))
    if isinstance(desired, str) and isinstance(existing, str):
        return desired.strip("/") != existing.strip("/") if "/" in desired else desired != existing
    return desired != existing


@dataclass
class Deployed:
    """What ``deploy`` did to one service: created, updated or unchanged."""

    name: str
    action: str
    notes: list[str] = field(default_factory=list)


class Oscar:
    """One OSCAR cluster's REST API, through the shared HTTP client and retry policy."""

    def __init__(self, cluster: Cluster, *, token: Any = None, retry: Retry | None = None,
                 session: requests.Session | None = None) -> None:
        from nbplugins import tokens

        self.cluster = cluster
        self.label = f"OSCAR {cluster.label}"
        self.retry = retry or Retry.from_config()
        self.session = session or requests.Session()
        self.oidc = token or tokens.default_resolver() if cluster.auth == "oidc" else token
        if cluster.auth == "basic":
            assert cluster.user and cluster.password
            provider, scheme = _Basic(cluster.user, cluster.password), "Basic "
        else:
            provider, scheme = self.oidc, "Bearer "
        self.system = HttpClient(cluster.endpoint, service=self.label, token=provider, scheme=scheme,
                                 retry=self.retry, verify=cluster.ssl_verify, session=self.session)
        self._invokers: dict[str, HttpClient] = {}
        self._info: dict[str, Any] | None = None
        self._user_config: dict[str, Any] | None = None
        self._services: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ requests and refusals

    def send(self, method: str, path: str, *, what: str, client: HttpClient | None = None,
             allow: tuple[int, ...] = (), vo: str | None = None, **kwargs: Any) -> requests.Response:
        """One request; 401, 403 and 404 become errors that say what they mean here."""
        client = client or self.system
        basic = self.cluster.auth == "basic"  # 401 is ours to explain: there is no token to refresh
        statuses = set(allow) | {403, 404} | ({401} if basic else set())
        try:
            response = client.request(method, path, allow=statuses, **kwargs)
        except AuthError as exc:
            raise AuthError(f"{self.label}: {what}: the cluster refused the OIDC token (HTTP 401): it has expired "
                            f"or this cluster does not accept its issuer; {exc}") from None
        status = response.status_code
        if status in allow:
            return response
        if status == 401:
            if client is self.system:
                raise AuthError(f"{self.label}: {what}: HTTP 401: the cluster refused user {self.cluster.user!r}; "
                                "check the user and password ([oscar.clusters.NAME] or OSCAR_USER/OSCAR_PASSWORD)")
            raise AuthError(f"{self.label}: {what}: HTTP 401: the cluster refused the service's token; it changed "
                            "since it was read (redeployed?): try again")
        if status == 403:
            said = secrets.redact(response.text.strip().splitlines()[0][:200]) if response.text.strip() else ""
            named = re.search(r"\bvo:\s*([\w.-]+)", said, re.IGNORECASE)
            reason = self._forbidden(vo or (named.group(1) if named else None))
            raise AuthError(f"{self.label}: {what}: HTTP 403: {reason}" + (f"; the cluster says: {said}" if said else ""))
        if status == 404:
            raise ServiceError(f"{self.label}: {what}: not found (HTTP 404)", 404)
        return response

    def _forbidden(self, vo: str | None) -> str:
        """Why a valid identity may be refused: not a member of the service's VO, or not allowed.

        VOs are read from the token's entitlements as OSCAR reads them (``eduperson_entitlement``
        or ``entitlements``), without asking the issuer.
        """
        if self.cluster.auth == "basic":
            return f"user {self.cluster.user!r} is authenticated but not allowed to do this"
        from nbplugins.tokens import vos_from_entitlements

        try:
            raw = self.oidc.get().claims.raw or {}
        except NbpluginsError:
            raw = {}
        vos = vos_from_entitlements(raw.get("eduperson_entitlement") or raw.get("entitlements"))
        has = f" (the token has: {', '.join(vos) or 'no VO'})" if raw else ""
        if vo:
            return f"the token is valid but its identity is not a member of VO {vo}, the service's VO{has}"
        return f"the token is valid but its identity may not use this: not in the service's VO or allowed_users{has}"

    def _json(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ServiceError(f"{self.label}: {what}: the answer is not JSON "
                               f"({(response.headers.get('Content-Type') or 'no content type')})") from None

    # ------------------------------------------------------------------ cluster

    def info(self) -> dict[str, Any]:
        """``GET /system/info``: version and serverless backend (cached)."""
        if self._info is None:
            self._info = self._json(self.send("GET", "/system/info", what="read the cluster info"), "info")
        return self._info

    @property
    def version(self) -> str | None:
        return self.info().get("version")

    def has_run(self) -> bool | None:
        """Whether ``/run`` exists (a serverless backend such as Knative); None when the cluster does not say."""
        info = self.info()
        backend = info.get("serverless_backend")
        if backend is None:  # OSCAR leaves it out when there is no serverless backend
            return False if info.get("version") else None
        if isinstance(backend, dict):
            return bool(backend.get("name"))
        return bool(backend)

    def user_config(self) -> dict[str, Any]:
        """``GET /system/config``: the MinIO endpoint and this user's keys; provisions an OIDC user (cached)."""
        if self._user_config is None:
            body = self._json(self.send("GET", "/system/config", what="read the cluster config"), "config")
            minio = body.get("minio_provider") or (body.get("config") or {}).get("minio_provider") or {}
            secrets.register(minio.get("access_key"), "OSCAR MinIO access key")
            secrets.register(minio.get("secret_key"), "OSCAR MinIO secret key")
            self._user_config = body
        return self._user_config

    def minio(self) -> dict[str, Any]:
        """The cluster's MinIO provider for this user: endpoint, region, keys, verify."""
        body = self.user_config()
        minio = body.get("minio_provider") or (body.get("config") or {}).get("minio_provider")
        if not isinstance(minio, dict) or not minio.get("endpoint"):
            raise ServiceError(f"{self.label}: /system/config has no minio_provider endpoint; the cluster gives "
                               "no storage for asynchronous runs")
        return minio

    # ------------------------------------------------------------------ services

    def services(self) -> list[dict[str, Any]]:
        """Every service visible to this user."""
        body = self._json(self.send("GET", "/system/services", what="list services"), "services")
        if not isinstance(body, list):
            raise ServiceError(f"{self.label}: the service list is not a JSON array")
        for svc in body:
            fdl_mod.register_secrets(svc)
        return body

    def service(self, name: str, *, refresh: bool = False) -> dict[str, Any]:
        """One service's definition (its token and credentials registered as secrets)."""
        if refresh or name not in self._services:
            response = self.send("GET", f"/system/services/{quote(name, safe='')}", what=f"read service {name!r}",
                                 allow=(404,))
            if response.status_code == 404:
                raise ServiceError(f"{self.label}: no service named {name!r}; `nbplugins oscar ls` lists them", 404)
            svc = self._json(response, f"service {name}")
            fdl_mod.register_secrets(svc)
            secrets.register(svc.get("token"), f"OSCAR service {name} token")
            self._services[name] = svc
        return self._services[name]

    def exists(self, name: str) -> dict[str, Any] | None:
        """The service's definition, or None when there is none."""
        try:
            return self.service(name, refresh=True)
        except ServiceError as exc:
            if exc.status == 404:
                return None
            raise

    def deploy(self, fdl: fdl_mod.Fdl, cluster_id: str | None = None) -> list[Deployed]:
        """Create or update every service of the FDL for this cluster; unchanged services are left alone.

        Everything is checked first (the FDL, the cluster id); a creation refused half-way removes
        the services this call created, so a multi-service FDL lands whole or not at all.
        """
        bodies = fdl.for_cluster(cluster_id if cluster_id is not None else self._fdl_cluster_id(fdl))
        version = self.version
        plan: list[tuple[dict[str, Any], str, list[str]]] = []
        for body in bodies:
            notes = [n for n in [fdl_mod.generation_note(body["name"], fdl_mod.ignored_fields(body, version),
                                                         version)] if n]
            existing = self.exists(body["name"])
            action = "create" if existing is None else "update" if _differs(body, existing) else "unchanged"
            plan.append((body, action, notes))
        done: list[Deployed] = []
        created: list[str] = []
        try:
            for body, action, notes in plan:
                name = body["name"]
                if action == "create":
                    self.send("POST", "/system/services", what=f"create service {name!r}", json=body, vo=body.get("vo"))
                    created.append(name)
                elif action == "update":
                    self.send("PUT", "/system/services", what=f"update service {name!r}", json=body, vo=body.get("vo"))
                self._services.pop(name, None)
                done.append(Deployed(name, {"create": "created", "update": "updated"}.get(action, action), notes))
        except NbpluginsError as exc:
            for name in created:
                try:
                    self.remove(name)
                except NbpluginsError as undo:
                    log.warning("could not remove service %s created before the failure: %s", name, undo)
            undone = f" (removed {', '.join(created)}, created before it)" if created else ""
            if isinstance(exc, AuthError):
                raise AuthError(f"{exc}{undone}") from None
            raise ServiceError(f"{exc}{undone}", getattr(exc, "status", None)) from None
        return done

    def _fdl_cluster_id(self, fdl: fdl_mod.Fdl) -> str | None:
        """The FDL's cluster id for this cluster: its config name when the FDL names it, else the only one."""
        if self.cluster.name and self.cluster.name in fdl.cluster_ids:
            return self.cluster.name
        return None

    def remove(self, name: str) -> None:
        """Delete a service (its buckets stay, as OSCAR does)."""
        response = self.send("DELETE", f"/system/services/{quote(name, safe='')}", what=f"remove service {name!r}",
                             allow=(404,))
        if response.status_code == 404:
            raise ServiceError(f"{self.label}: no service named {name!r}; `nbplugins oscar ls` lists them", 404)
        self._services.pop(name, None)

    # ------------------------------------------------------------------ jobs and logs

    def jobs(self, name: str) -> dict[str, dict[str, Any]]:
        """Every job of a service with its status and times, all pages, both answer shapes."""
        found: dict[str, dict[str, Any]] = {}
        page: str | None = None
        seen: set[str] = set()
        while True:
            params = {"page": page} if page else None
            body = self._json(self.send("GET", f"/system/logs/{quote(name, safe='')}", what=f"list jobs of {name!r}",
                                        params=params), "job list")
            jobs, page = jobs_from(body)
            found.update(jobs)
            if not page or page in seen:
                return found
            seen.add(page)

    def job_state(self, info: dict[str, Any], name: str) -> State:
        """The shared :class:`State` of an OSCAR job status (Pending, Running, Succeeded, Failed)."""
        return state_of(str(info.get("status") or "Pending"), service=self.label)

    def job_logs(self, name: str, job: str) -> str:
        """The logs of one job (scrubbed of registered secrets)."""
        response = self.send("GET", f"/system/logs/{quote(name, safe='')}/{quote(job, safe='')}",
                             what=f"read the logs of job {job}")
        return secrets.redact(response.text)

    # ------------------------------------------------------------------ invocations

    def invoker(self, name: str) -> HttpClient:
        """The client for ``/run`` and ``/job``: the service token (Basic clusters) or the OIDC token, never Basic."""
        if name not in self._invokers:
            if self.cluster.auth == "basic":
                from nbplugins.tokens import StaticToken

                token = self.service(name).get("token")
                if not token:
                    raise ServiceError(f"{self.label}: service {name!r} has no token to invoke it with")
                provider: Any = StaticToken(token, f"OSCAR service {name} token")
            else:
                provider = self.oidc
            self._invokers[name] = HttpClient(self.cluster.endpoint, service=self.label, token=provider,
                                              retry=self.retry, verify=self.cluster.ssl_verify, session=self.session)
        return self._invokers[name]

    def submit(self, name: str, body: bytes | str) -> str | None:
        """``POST /job/{name}``; the new job's name, found by listing the jobs before and after.

        OSCAR answers 201 with no body. With OIDC a first ``/system`` call provisions the
        user's MinIO account, without which ``/job`` answers 403; it is made here, and once
        more if the cluster still says the user is not provisioned.
        """
        svc = self.service(name)
        if self.cluster.auth == "oidc":
            self.user_config()
        before = set(self.jobs(name))
        client = self.invoker(name)
        what = f"submit a job to {name!r}"
        response = self.send("POST", f"/job/{quote(name, safe='')}", what=what, client=client, data=body,
                             allow=(403,), vo=svc.get("vo"))
        if response.status_code == 403 and "provision" in response.text.lower():
            self._user_config = None
            self.user_config()
            response = self.send("POST", f"/job/{quote(name, safe='')}", what=what, client=client, data=body,
                                 allow=(403,), vo=svc.get("vo"))
        if response.status_code == 403:
            raise AuthError(f"{self.label}: {what}: HTTP 403: {self._forbidden(svc.get('vo'))}")
        new = sorted(set(self.jobs(name)) - before)
        return new[0] if len(new) == 1 else None

    def run(self, name: str, value: str, *, timeout: float = 300.0) -> bytes:
        """``POST /run/{name}`` with ``value`` (a file path, JSON or text) encoded as the FaaS Supervisor
        expects; the raw answer. Cold starts (502, 503, 504, timeouts) are retried within ``timeout``."""
        svc = self.service(name)
        if self.has_run() is False:
            raise ServiceError(no_run(self.label, name))
        body, content_type = encode_input(value)
        client = self.invoker(name)
        client.retry = self.retry.with_(deadline=timeout)
        client.timeout = (10.0, max(10.0, timeout))
        response = self.send("POST", f"/run/{quote(name, safe='')}", what=f"run {name!r}", client=client, data=body,
                             headers={"Content-Type": content_type}, allow=(404,), vo=svc.get("vo"))
        if response.status_code == 404:
            raise ServiceError(no_run(self.label, name), 404)
        return response.content


def no_run(label: str, name: str) -> str:
    return (f"{label}: /run/{name} does not exist: the cluster has no serverless backend (Knative), so it cannot "
            "run services synchronously; run it asynchronously with --async")


# ----------------------------------------------------------------------------- the supervisor's encoding


def encode_input(value: str) -> tuple[bytes, str]:
    """The ``/run`` body for an input: a file's bytes or text in base64, JSON as it is."""
    path = Path(value)
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    if is_file:
        return base64.b64encode(path.read_bytes()), "text/plain"
    text = value.strip()
    if text[:1] in ("{", "["):
        try:
            json.loads(text)
            return text.encode(), "application/json"
        except ValueError:
            pass
    return base64.b64encode(value.encode()), "text/plain"


_MAGIC = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"%PDF": ".pdf", b"GIF8": ".gif", b"\x1f\x8b": ".gz",
          b"CDF\x01": ".nc", b"\x89HDF": ".h5"}


def decode_answer(answer: bytes, stem: str = "output") -> tuple[str, bytes, str]:
    """What a ``/run`` answer holds: ``(file name, bytes, media type)``.

    The FaaS Supervisor sends base64 of the one output file, base64 of a zip when there are
    several, and the plain text (the script's output) when there is none.
    """
    text = answer.strip()
    decoded = None
    if text and len(text) % 4 == 0:
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            decoded = None
    if decoded is not None and not _plausible(decoded, len(text)):
        decoded = None
    if decoded is None:
        return f"{stem}.txt", answer, "text/plain"
    if decoded[:4] == b"PK\x03\x04" and zipfile.is_zipfile(BytesIO(decoded)):
        return f"{stem}.zip", decoded, "application/zip"
    for magic, ext in _MAGIC.items():
        if decoded.startswith(magic):
            return f"{stem}{ext}", decoded, "application/octet-stream"
    try:
        decoded.decode()
        return f"{stem}.txt", decoded, "text/plain"
    except UnicodeDecodeError:
        return f"{stem}.bin", decoded, "application/octet-stream"


def _plausible(decoded: bytes, length: int) -> bool:
    """Whether base64-looking text really was base64: a short word such as ``done`` decodes to noise."""
    if decoded[:4] == b"PK\x03\x04" or any(decoded.startswith(m) for m in _MAGIC):
        return True
    try:
        decoded.decode()
        return True
    except UnicodeDecodeError:
        return length >= 64


def run_sync(client: Oscar, name: str, value: str, dest: str, *, timeout: float = 300.0,
             progress: bool = True) -> list[Any]:
    """Run ``name`` on one input through ``/run`` and write the decoded answer to ``dest``; the results."""
    from nbplugins.services.results import Output, download

    answer = client.run(name, value, timeout=timeout)
    stem = Path(value).stem if _is_file(value) else "output"
    file_name, data, media = decode_answer(answer, stem or "output")
    output = Output(name=file_name, value=data, media_type=media, description=f"{name} on {Path(value).name}"
                    if _is_file(value) else f"{name} answer")
    return download([output], dest, unpack=media == "application/zip", progress=progress)


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except OSError:
        return False


def check_inputs(values: list[str], *, files_only: bool) -> None:
    """Refuse inputs before anything is sent: none given, or (async) not a file."""
    if not values:
        raise ValidationError("give at least one INPUT (a file, text or JSON)")
    if files_only:
        missing = [v for v in values if not _is_file(v)]
        if missing:
            raise ValidationError(f"--async uploads files: no such file {missing[0]!r}"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
