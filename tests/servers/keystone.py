"""A Keystone v3 test server with only what keystoneauth1's OIDC -> EC2 exchange calls.

Run as a process: ``python -m tests.servers.keystone --port P --jwt-key KEY --project ID
[--seed-ec2 ACCESS,SECRET]``. It serves version discovery (``/`` and ``/v3``), the
federation endpoint ``/v3/OS-FEDERATION/identity_providers/{idp}/protocols/{proto}/auth``
(Bearer OIDC token, HS256-verified with ``--jwt-key``, checked for expiry), project-scoped
``POST /v3/auth/tokens`` with a token method, and ``/v3/users/{id}/credentials/OS-EC2``
list/create. Response shapes follow the Keystone API reference: ``X-Subject-Token`` header,
a ``token`` body with ``methods``, ``user``, ``project``, ``catalog``, ``expires_at``.
``GET /_test/stats`` reports request counts for tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

IDP = "egi.eu"
PROTOCOL = "openid"


class State:
    def __init__(self, jwt_key: str, project: str, seed: list[tuple[str, str]]) -> None:
        self.jwt_key = jwt_key
        self.project = project
        self.tokens: dict[str, dict] = {}  # keystone token id -> {user_id, scoped, expires}
        self.credentials: dict[str, list[dict]] = {}  # user_id -> [cred]
        self.seed = seed
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def make_handler(state: State, base: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

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

        def _token_user(self) -> dict | None:
            tok = state.tokens.get(self.headers.get("X-Auth-Token", ""))
            if tok is None or tok["expires"] < time.time() or not tok["scoped"]:
                return None
            return tok

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
                    self._send(200, {"counts": dict(state.counts),
                                     "credentials": sum(len(v) for v in state.credentials.values())})
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
                try:
                    claims = jwt.decode(auth[7:], state.jwt_key, algorithms=["HS256"],
                                        options={"verify_aud": False})
                except jwt.PyJWTError as exc:
                    return self._error(401, "Unauthorized", f"token rejected: {type(exc).__name__}")
                user_id = hashlib.sha256(claims["sub"].encode()).hexdigest()[:32]
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
                if project != state.project:
                    return self._error(401, "Unauthorized", f"User has no access to project {project}")
                return self._issue(prior["user_id"], prior["name"], scoped=True)
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

        def _issue(self, user_id: str, name: str, scoped: bool) -> None:
            token_id = "gAAAA" + secrets.token_urlsafe(48)
            now = datetime.now(UTC)
            expires = now + timedelta(hours=1)
            with state.lock:
                state.tokens[token_id] = {"user_id": user_id, "name": name, "scoped": scoped,
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
            if scoped:
                token["project"] = {"id": state.project, "name": "vo.test",
                                    "domain": {"id": "default", "name": "Default"}}
                token["roles"] = [{"id": "r1", "name": "member"}]
                token["catalog"] = [{
                    "type": "identity", "name": "keystone", "id": "c1",
                    "endpoints": [{"id": "e1", "interface": "public", "region": "RegionOne",
                                   "region_id": "RegionOne", "url": f"{base}/v3"}],
                }]
            self._send(201, {"token": token}, {"X-Subject-Token": token_id})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwt-key", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--seed-ec2", action="append", default=[], help="ACCESS,SECRET to pre-create")
    args = parser.parse_args()
    seed = [tuple(s.split(",", 1)) for s in args.seed_ec2]
    state = State(args.jwt_key, args.project, seed)  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{args.port}"
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state, base))
    server.serve_forever()


if __name__ == "__main__":
    main()
