"""A Keystone v3 test server with what keystoneauth1's federated OIDC login, the EC2 exchange,
novaclient and openstacksdk call, and a small Nova compute API in the same process.

Run as a process: ``python -m nbplugins.sandbox.servers.keystone --port P --project ID
[--jwt-key KEY] [--issuer URL] [--extra-project ID] [--seed-ec2 ACCESS,SECRET]``. It serves
version discovery (``/`` and ``/v3``), the federation endpoint
``/v3/OS-FEDERATION/identity_providers/{idp}/protocols/{proto}/auth`` (Bearer OIDC token:
an HS256 JWT verified with ``--jwt-key`` and checked for expiry, or, with ``--issuer``, an
access token that issuer's userinfo endpoint accepts, as Keystone's OIDC mapping validates
it at the IdP; the sandbox passes its oidc-provider-mock), ``POST /v3/auth/tokens`` (token
method) scoping to a project the user is in (``--project`` and every ``--extra-project``;
any other project is refused with 403), ``GET /v3/auth/projects`` for any valid token, and
``/v3/users/{id}/credentials/OS-EC2`` list/create. Response shapes follow the Keystone API
reference: ``X-Subject-Token`` header, a ``token`` body with ``methods``, ``user``,
``project``, ``catalog`` (identity and compute), ``expires_at``.

The compute API lives under ``/compute``: the versions document (``/compute``), the v2.1
version document, ``GET /v2.1/servers``, ``/servers/detail``, ``/servers/{id}``,
``/flavors/{id}`` and ``/flavors/detail``, with microversions (``OpenStack-API-Version`` /
``X-OpenStack-Nova-API-Version``; from 2.47 servers embed their flavor), as in the Nova API
reference. ``--project`` holds three servers, the extra projects none.

``GET /_test/stats`` reports request counts (and federated logins per subject) for tests;
``POST /_test/expire`` expires every Keystone token issued so far (the next request is 401).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

from nbplugins.sandbox import harness
from nbplugins.sandbox.servers.common import IssuerUsers

IDP = "egi.eu"
PROTOCOL = "openid"


FLAVORS = {
    "f-small": {"name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
    "f-medium": {"name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40},
    "f-large": {"name": "m1.large", "vcpus": 4, "ram": 8192, "disk": 80},
}
SERVERS = [  # (name, status, flavor, {network: [(address, type)]})
    ("pangeo-worker-1", "ACTIVE", "f-medium", {"public": [("147.251.21.10", "fixed")]}),
    ("pangeo-worker-2", "SHUTOFF", "f-large", {"public": [("147.251.21.11", "fixed")]}),
    ("jupyter-gateway", "ACTIVE", "f-small",
     {"private": [("192.168.1.5", "fixed"), ("147.251.21.99", "floating")], "ipv6": [("2001:718:801::5", "fixed")]}),
]
MAX_MICROVERSION = "2.96"


class State:
    """The projects and their servers, the tokens issued, the EC2 credentials and the counts."""

    def __init__(self, jwt_key: str | None, project: str, seed: list[tuple[str, str]],
                 extra_projects: tuple[str, ...] = (), users_at: IssuerUsers | None = None) -> None:
        self.jwt_key = jwt_key
        self.users_at = users_at
        self.project = project
        self.projects = {project: "vo.test", **{p: f"vo.extra{i}" for i, p in enumerate(extra_projects, 1)}}
        self.servers = {project: [_server_id(project, i) for i in range(len(SERVERS))]}
        self.federated: Counter[str] = Counter()  # federated logins per subject
        self.tokens: dict[str, dict] = {}  # keystone token id -> {user_id, scoped, expires}
        self.credentials: dict[str, list[dict]] = {}  # user_id -> [cred]
        self.seed = seed
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def _server_id(project: str, index: int) -> str:
    digest = hashlib.sha256(f"{project}/{index}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _microversion(headers: object) -> tuple[int, int]:
    """The compute microversion a request asks for (2.1 when it names none)."""
    value = headers.get("OpenStack-API-Version", "") or ""  # type: ignore[attr-defined]
    wanted = value.split()[-1] if value.lower().startswith("compute") else ""
    wanted = wanted or headers.get("X-OpenStack-Nova-API-Version", "") or "2.1"  # type: ignore[attr-defined]
    if wanted == "latest":
        wanted = MAX_MICROVERSION
    major, _, minor = wanted.partition(".")
    return int(major), int(minor or 0)


def _federated_claims(state: State, token: str) -> tuple[dict | None, str]:
    """The claims of an OIDC token Keystone's federation accepts, or (None, why it was rejected)."""
    why = "no way to verify it"
    if state.jwt_key:
        try:
            return jwt.decode(token, state.jwt_key, algorithms=["HS256"], options={"verify_aud": False}), ""
        except jwt.PyJWTError as exc:
            why = type(exc).__name__
    if state.users_at is not None:
        claims = state.users_at.claims(token)
        if claims is not None:
            return claims, ""
        why = "the identity provider does not accept it"
    return None, why


def make_handler(state: State, base: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 64 * 1024  # headers and body leave in one write (no Nagle / delayed-ACK stall per answer)
        disable_nagle_algorithm = True

        def log_message(self, fmt: str, *args: object) -> None:  # quiet; counts are in /_test/stats
            pass

        def _send(self, status: int, body: dict | None, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, title: str, message: str) -> None:
            self._send(status, {"error": {"code": status, "title": title, "message": message}})

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else {}

        def _version(self) -> dict:
            return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                    "links": [{"rel": "self", "href": f"{base}/v3/"}],
                    "media-types": [{"base": "application/json",
                                     "type": "application/vnd.openstack.identity-v3+json"}]}

        def _token_user(self, scoped: bool = True) -> dict | None:
            tok = state.tokens.get(self.headers.get("X-Auth-Token", ""))
            if tok is None or tok["expires"] < time.time() or (scoped and not tok["scoped"]):
                return None
            return tok

        def _unauthorized(self) -> None:
            self._error(401, "Unauthorized", "The request you have made requires authentication.")

        def _compute_version(self) -> dict:
            return {"id": "v2.1", "status": "CURRENT", "version": MAX_MICROVERSION, "min_version": "2.1",
                    "updated": "2013-07-23T11:33:21Z",
                    "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"},
                              {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}],
                    "media-types": [{"base": "application/json",
                                     "type": "application/vnd.openstack.compute+json;version=2.1"}]}

        def _compute(self, path: str) -> None:
            """The Nova API: version documents open, the rest for a token scoped to a project."""
            mv = _microversion(self.headers)
            headers = {"OpenStack-API-Version": f"compute {mv[0]}.{mv[1]}",
                       "X-OpenStack-Nova-API-Version": f"{mv[0]}.{mv[1]}", "Vary": "OpenStack-API-Version"}
            if path == "/compute":
                v20 = {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
                       "updated": "2011-01-21T11:33:21Z", "links": [{"rel": "self", "href": f"{base}/compute/v2/"}]}
                return self._send(200, {"versions": [v20, self._compute_version()]})
            if path == "/compute/v2.1":
                return self._send(200, {"version": self._compute_version()})
            if not path.startswith("/compute/v2.1/"):
                return self._error(404, "Not Found", "The resource could not be found.")
            tok = self._token_user()
            if tok is None:
                return self._unauthorized()
            rest = path[len("/compute/v2.1"):]
            project = tok["project"]
            mine = state.servers.get(project, [])
            if rest == "/servers/detail":
                return self._send(200, {"servers": [self._server(project, i, mv) for i in range(len(mine))]},
                                  headers)
            if rest == "/servers":
                return self._send(200, {"servers": [{"id": sid, "name": SERVERS[i][0], "links": self._links(
                    "servers", sid)} for i, sid in enumerate(mine)]}, headers)
            if rest.startswith("/servers/") and rest.count("/") == 2:
                sid = rest.rsplit("/", 1)[1]
                if sid in mine:
                    return self._send(200, {"server": self._server(project, mine.index(sid), mv)}, headers)
                return self._error(404, "itemNotFound", f"Instance {sid} could not be found.")
            if rest == "/flavors/detail":
                return self._send(200, {"flavors": [self._flavor(fid) for fid in FLAVORS]}, headers)
            if rest.startswith("/flavors/") and rest.count("/") == 2:
                fid = rest.rsplit("/", 1)[1]
                if fid in FLAVORS:
                    return self._send(200, {"flavor": self._flavor(fid)}, headers)
                return self._error(404, "itemNotFound", f"Flavor {fid} could not be found.")
            self._error(404, "Not Found", "The resource could not be found.")

        def _links(self, kind: str, item: str) -> list[dict]:
            return [{"rel": "self", "href": f"{base}/compute/v2.1/{kind}/{item}"},
                    {"rel": "bookmark", "href": f"{base}/compute/{kind}/{item}"}]

        def _flavor(self, fid: str) -> dict:
            f = FLAVORS[fid]
            return {"id": fid, "name": f["name"], "vcpus": f["vcpus"], "ram": f["ram"], "disk": f["disk"],
                    "OS-FLV-EXT-DATA:ephemeral": 0, "swap": 0, "rxtx_factor": 1.0,
                    "os-flavor-access:is_public": True, "links": self._links("flavors", fid)}

        def _server(self, project: str, index: int, mv: tuple[int, int]) -> dict:
            name, status, fid, nets = SERVERS[index]
            sid = state.servers[project][index]
            if mv >= (2, 47):
                f = FLAVORS[fid]
                flavor: dict = {"original_name": f["name"], "vcpus": f["vcpus"], "ram": f["ram"], "disk": f["disk"],
                                "ephemeral": 0, "swap": 0, "extra_specs": {}}
            else:
                flavor = {"id": fid, "links": [{"rel": "bookmark", "href": f"{base}/compute/flavors/{fid}"}]}
            addresses = {net: [{"addr": addr, "version": 6 if ":" in addr else 4, "OS-EXT-IPS:type": kind,
                                "OS-EXT-IPS-MAC:mac_addr": f"fa:16:3e:00:00:{index:02x}"}
                               for addr, kind in entries] for net, entries in nets.items()}
            return {"id": sid, "name": name, "status": status, "tenant_id": project, "user_id": "u",
                    "flavor": flavor, "image": {"id": "img-1", "links": []}, "addresses": addresses,
                    "created": "2024-05-01T10:00:00Z", "updated": "2024-05-01T10:05:00Z",
                    "hostId": hashlib.sha256(project.encode()).hexdigest()[:56], "metadata": {},
                    "key_name": None, "accessIPv4": "", "accessIPv6": "", "progress": 0,
                    "OS-EXT-STS:power_state": 1 if status == "ACTIVE" else 4,
                    "OS-EXT-STS:vm_state": status.lower(), "OS-EXT-STS:task_state": None,
                    "OS-EXT-AZ:availability_zone": "nova", "config_drive": "", "locked": False,
                    "security_groups": [{"name": "default"}], "os-extended-volumes:volumes_attached": [],
                    "links": self._links("servers", sid)}

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            with state.lock:
                state.counts[f"GET {path.split('/users/')[0]}"] += 1
            if path == "":
                self._send(300, {"versions": {"values": [self._version()]}})
            elif path == "/v3":
                self._send(200, {"version": self._version()})
            elif path == "/_test/stats":
                with state.lock:
                    self._send(200, {"counts": dict(state.counts), "federated": dict(state.federated),
                                     "credentials": sum(len(v) for v in state.credentials.values())})
            elif path == "/compute" or path.startswith("/compute/"):
                self._compute(path)
            elif path == "/v3/auth/projects":
                tok = self._token_user(scoped=False)
                if tok is None:
                    return self._unauthorized()
                projects = [{"id": pid, "name": name, "domain_id": "default", "enabled": True, "is_domain": False,
                             "parent_id": "default", "description": "", "tags": [],
                             "links": {"self": f"{base}/v3/projects/{pid}"}}
                            for pid, name in state.projects.items()]
                self._send(200, {"projects": projects,
                                 "links": {"self": f"{base}/v3/auth/projects", "previous": None, "next": None}})
            elif path.startswith("/v3/users/") and path.endswith("/credentials/OS-EC2"):
                user_id = path.split("/")[3]
                tok = self._token_user()
                if tok is None or tok["user_id"] != user_id:
                    return self._error(401, "Unauthorized", "The request you have made requires authentication.")
                with state.lock:
                    state.counts["list ec2"] += 1
                    creds = list(state.credentials.get(user_id, []))
                self._send(200, {"credentials": creds,
                                 "links": {"self": f"{base}{path}", "previous": None, "next": None}})
            else:
                self._error(404, "Not Found", f"Could not find {path}")

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            fed = f"/v3/OS-FEDERATION/identity_providers/{IDP}/protocols/{PROTOCOL}/auth"
            if path.startswith("/v3/OS-FEDERATION/identity_providers/"):
                with state.lock:
                    state.counts["federation auth"] += 1
                if path != fed:
                    return self._error(404, "Not Found", "Could not find identity provider or protocol")
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer "):
                    return self._error(401, "Unauthorized", "Missing OIDC access token")
                claims, why = _federated_claims(state, auth[7:].strip())
                if claims is None:
                    return self._error(401, "Unauthorized", f"token rejected: {why}")
                user_id = hashlib.sha256(claims["sub"].encode()).hexdigest()[:32]
                with state.lock:
                    state.federated[claims["sub"]] += 1
                return self._issue(user_id, claims["sub"], scoped=False)
            if path == "/v3/auth/tokens":
                body = self._body()
                with state.lock:
                    state.counts["auth tokens"] += 1
                ident = body.get("auth", {}).get("identity", {})
                prior = state.tokens.get(ident.get("token", {}).get("id", ""))
                if ident.get("methods") != ["token"] or prior is None or prior["expires"] < time.time():
                    return self._error(401, "Unauthorized", "The request you have made requires authentication.")
                project = body.get("auth", {}).get("scope", {}).get("project", {}).get("id")
                if project not in state.projects:
                    return self._error(403, "Forbidden",
                                       f"User {prior['user_id']} has no access to project {project}")
                return self._issue(prior["user_id"], prior["name"], scoped=True, project=project)
            if path == "/_test/expire":
                with state.lock:
                    for tok in state.tokens.values():
                        tok["expires"] = 0.0
                return self._send(200, {"expired": len(state.tokens)})
            if path.startswith("/v3/users/") and path.endswith("/credentials/OS-EC2"):
                user_id = path.split("/")[3]
                tok = self._token_user()
                if tok is None or tok["user_id"] != user_id:
                    return self._error(401, "Unauthorized", "The request you have made requires authentication.")
                tenant = self._body().get("tenant_id")
                if tenant != state.project:
                    return self._error(403, "Forbidden", "You are not authorized for this project")
                cred = self._cred(user_id, secrets.token_hex(16), secrets.token_hex(16))
                with state.lock:
                    state.counts["create ec2"] += 1
                    state.credentials.setdefault(user_id, []).append(cred)
                return self._send(201, {"credential": cred})
            self._error(404, "Not Found", f"Could not find {path}")

        def _cred(self, user_id: str, access: str, secret: str) -> dict:
            return {"user_id": user_id, "tenant_id": state.project, "access": access, "secret": secret,
                    "trust_id": None,
                    "links": {"self": f"{base}/v3/users/{user_id}/credentials/OS-EC2/{access}"}}

        def _issue(self, user_id: str, name: str, scoped: bool, project: str | None = None) -> None:
            token_id = "gAAAA" + secrets.token_urlsafe(48)
            now = datetime.now(UTC)
            expires = now + timedelta(hours=1)
            with state.lock:
                state.tokens[token_id] = {"user_id": user_id, "name": name, "scoped": scoped, "project": project,
                                          "expires": expires.timestamp()}
                if scoped and state.seed and user_id not in state.credentials:
                    state.credentials[user_id] = [self._cred(user_id, a, s) for a, s in state.seed]
            token = {
                "methods": ["mapped" if not scoped else "token"],
                "user": {"id": user_id, "name": name, "domain": {"id": "federated", "name": "Federated"},
                         "OS-FEDERATION": {"identity_provider": {"id": IDP}, "protocol": {"id": PROTOCOL},
                                           "groups": []}},
                "audit_ids": [secrets.token_urlsafe(16)],
                "expires_at": _iso(expires),
                "issued_at": _iso(now),
            }
            if scoped and project is not None:
                token["project"] = {"id": project, "name": state.projects[project],
                                    "domain": {"id": "default", "name": "Default"}}
                token["roles"] = [{"id": "r1", "name": "member"}]
                token["catalog"] = [{
                    "type": "identity", "name": "keystone", "id": "c1",
                    "endpoints": [{"id": "e1", "interface": "public", "region": "RegionOne",
                                   "region_id": "RegionOne", "url": f"{base}/v3"}],
                }, {
                    "type": "compute", "name": "nova", "id": "c2",
                    "endpoints": [{"id": "e2", "interface": "public", "region": "RegionOne",
                                   "region_id": "RegionOne", "url": f"{base}/compute/v2.1"}],
                }]
            self._send(201, {"token": token}, {"X-Subject-Token": token_id})

    return Handler


def start(project: str, *, jwt_key: str | None = None, issuer: str | None = None,
          extra_projects: tuple[str, ...] = (), port: int | None = None, **kwargs: object) -> harness.ServerProcess:
    """Start the Keystone + compute server as a subprocess; ``kwargs`` go to :func:`harness.start`."""
    argv = [sys.executable, "-m", "nbplugins.sandbox.servers.keystone", "--port", "{port}", "--project", project]
    argv += ["--jwt-key", jwt_key] if jwt_key else []
    argv += ["--issuer", issuer] if issuer else []
    for extra in extra_projects:
        argv += ["--extra-project", extra]
    port = port or harness.free_port()
    return harness.start("keystone", argv, port=port,  # type: ignore[arg-type]
                         ready=harness.http_ready(f"http://{harness.HOST}:{port}/v3"), **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwt-key", default=None, help="verify federated OIDC tokens as HS256 JWTs with this key")
    parser.add_argument("--issuer", default=None,
                        help="accept the access tokens this OIDC issuer's userinfo endpoint accepts")
    parser.add_argument("--project", required=True)
    parser.add_argument("--extra-project", action="append", default=[], help="another project the user is in")
    parser.add_argument("--seed-ec2", action="append", default=[], help="ACCESS,SECRET to pre-create")
    args = parser.parse_args()
    if not args.jwt_key and not args.issuer:
        parser.error("give --jwt-key, --issuer or both: how federated OIDC tokens are verified")
    seed = [tuple(s.split(",", 1)) for s in args.seed_ec2]
    users_at = IssuerUsers(args.issuer) if args.issuer else None
    state = State(args.jwt_key, args.project, seed, tuple(args.extra_project), users_at)  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{args.port}"
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state, base))
    server.serve_forever()


if __name__ == "__main__":
    main()
