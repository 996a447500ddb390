"""A CCP-like OGC API - Processes test server: real pygeoapi behind a Bearer check, plus UMA.

Run as a process: ``python -m nbplugins.sandbox.servers.processes --port P --dir D --context C
[--issuer URL]``, the accepted user tokens in ``NBP_PROCESSES_USER_TOKENS`` (comma-separated) and
the static API token in ``NBP_PROCESSES_API_TOKEN``, so no token shows in a process listing
(``--user-token U --api-token A`` work too). pygeoapi (its Flask app, configured by a YAML file and an
OpenAPI document generated into ``D`` at start) serves ``/processes``, ``/processes/{id}``,
``POST /processes/{id}/execution`` (asynchronous with ``Prefer: respond-async``: 201 and a
``Location``), ``/jobs/{id}``, ``/jobs/{id}/results`` and ``DELETE /jobs/{id}``, with its
TinyDB job manager (jobs run in threads, outputs under ``D/outputs``). The processes
(``multi-files``, ``failing``, ``sleep``) are pygeoapi plugins in :mod:`.processors`, imported
by the server process only (pygeoapi takes seconds to import; starting the server does not).

In front of pygeoapi, in the same process: ``/files/`` (public, like CCP's storage links),
``POST /uma/token`` (Keycloak's UMA grant: ``grant_type=urn:ietf:params:oauth:grant-type:uma-ticket``,
``audience`` = the context, plain or URL-encoded as D4Science writes it, and
``Authorization: Bearer <user token>``: a JWT signed with the tests' key and not expired, one of
the user tokens, or, with ``--issuer``, an access token that issuer's userinfo endpoint accepts
(the sandbox's OIDC tokens); answers ``{"access_token", "expires_in", "token_type": "Bearer"}``, or 400 /
401 / 403 with an OAuth error), and a Bearer check on everything else: a UMA token this
server issued (not expired, not revoked by ``/_control/expire_uma``) or ``--api-token``.
Control channel as in :mod:`nbplugins.sandbox.servers.wps` (shared in :mod:`.common`), plus
``POST /_control/expire_uma`` and ``POST /_control/uma_lifetime?seconds=N``. Kinds counted: ``list``, ``describe``, ``execute``,
``status`` (``GET /jobs/{id}``), ``results``, ``dismiss``, ``jobs``, ``file``, ``uma``,
``unauthorized``, ``other``, ``all``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jwt

from nbplugins.sandbox import harness
from nbplugins.sandbox.servers.common import (
    IssuerUsers,
    Recorder,
    ServiceHandle,
    control,
    env_list,
    refuse,
    respond,
    serve,
    serve_static,
)

UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
USER_JWT_KEY = "test-signing-key-not-a-secret-0123456789"  # the tests' make_jwt key
DEFAULT_CONTEXT = "/d4science.research-infrastructures.eu/D4OS/NbpluginsLab"
FILES_PATH = "/files/"
UMA_PATH = "/uma/token"
USER_TOKENS_ENV = "NBP_PROCESSES_USER_TOKENS"
API_TOKEN_ENV = "NBP_PROCESSES_API_TOKEN"

# ---------------------------------------------------------------- the front: auth, UMA, files


class Auth:
    """Who may call: user tokens for the UMA grant, UMA tokens (and one static token) for the API.

    User tokens: the static ones, HS256 JWTs signed with the tests' key, and, given ``users_at``
    (an OIDC issuer), every access token that issuer accepts.
    """

    def __init__(self, context: str, user_token: str | list[str], api_token: str,
                 users_at: IssuerUsers | None = None) -> None:
        self.context = context
        self.user_tokens = {user_token} if isinstance(user_token, str) else set(user_token)
        self.user_token = next(iter(sorted(self.user_tokens)), "")
        self.api_token = api_token
        self.users_at = users_at
        self.key = f"uma-{uuid.uuid4().hex}"  # this server's own signing key
        self.issuer = ""
        self.active: set[str] = set()  # jti of the UMA tokens not revoked
        self.lifetime = 300
        self.lock = threading.Lock()

    def user(self, token: str) -> dict | None:
        """The claims of an acceptable user access token, or None."""
        if token and token in self.user_tokens:
            return {"sub": "nbplugins-test-user"}
        try:
            return jwt.decode(token, USER_JWT_KEY, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.PyJWTError:
            pass
        return self.users_at.claims(token) if self.users_at else None

    def issue(self, subject: str) -> tuple[str, int]:
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {"iss": self.issuer, "sub": subject, "aud": quote(self.context, safe=""), "iat": now,
                  "exp": now + self.lifetime, "jti": jti, "typ": "Bearer", "azp": "nbplugins",
                  "authorization": {"permissions": [{"rsname": "Default Resource"}]}}
        with self.lock:
            self.active.add(jti)
        return jwt.encode(claims, self.key, algorithm="HS256"), self.lifetime

    def api(self, token: str) -> bool:
        if token and token == self.api_token:
            return True
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], audience=quote(self.context, safe=""))
        except jwt.PyJWTError:
            return False
        with self.lock:
            return claims.get("jti") in self.active


def _oauth_error(start_response: Callable, status: int, error: str, description: str) -> list[bytes]:
    return respond(start_response, status, {"error": error, "error_description": description},
                   headers=[("Cache-Control", "no-store")])


def uma_token(auth: Auth, environ: dict[str, Any], body: bytes, start_response: Callable) -> list[bytes]:
    """Keycloak's token endpoint, for the UMA grant only."""
    if environ["REQUEST_METHOD"] != "POST":
        return _oauth_error(start_response, 405, "invalid_request", "HTTP method not allowed")
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    if form.get("grant_type") != UMA_GRANT:
        return _oauth_error(start_response, 400, "unsupported_grant_type", "Unsupported grant_type")
    header = environ.get("HTTP_AUTHORIZATION", "")
    if not header.lower().startswith("bearer "):
        return _oauth_error(start_response, 401, "invalid_grant", "Missing bearer token")
    claims = auth.user(header[7:].strip())
    if claims is None:
        return _oauth_error(start_response, 401, "invalid_grant", "Invalid bearer token")
    audience = form.get("audience", "")
    if not audience:
        return _oauth_error(start_response, 400, "invalid_request", "Missing audience")
    if audience not in (auth.context, quote(auth.context, safe="")):
        return _oauth_error(start_response, 403, "access_denied", "not_authorized")
    token, lifetime = auth.issue(str(claims.get("sub", "user")))
    return respond(start_response, 200, {"access_token": token, "expires_in": lifetime, "refresh_expires_in": 0,
                                         "token_type": "Bearer", "not-before-policy": 0, "upgraded": False},
                   headers=[("Cache-Control", "no-store")])


def _kind(method: str, path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["processes"]:
        if len(parts) == 1:
            return "list"
        if len(parts) == 2:
            return "describe"
        if len(parts) == 3 and parts[2] == "execution" and method == "POST":
            return "execute"
    if parts[:1] == ["jobs"]:
        if len(parts) == 1:
            return "jobs"
        if len(parts) == 2:
            return "dismiss" if method == "DELETE" else "status"
        if len(parts) == 3 and parts[2] == "results":
            return "results"
    return "other"


def build_app(data_dir: Path, auth: Auth, recorder: Recorder, api: Callable) -> Callable:
    """pygeoapi's WSGI app behind the Bearer check, with the UMA endpoint, files and control."""
    files = data_dir / "files"

    def extra(name: str, query: dict, body: bytes) -> Any:
        if name == "expire_uma":
            with auth.lock:
                revoked = len(auth.active)
                auth.active.clear()
            return {"revoked": revoked}
        if name == "uma_lifetime":
            auth.lifetime = int(query.get("seconds", ["300"])[0])
            return {"seconds": auth.lifetime}
        return None

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ["REQUEST_METHOD"]
        if path.startswith("/_control/"):
            return control(recorder, environ, start_response, extra)
        if path.startswith(FILES_PATH):
            recorder.record("file", environ)
            return serve_static(files, path.removeprefix(FILES_PATH), start_response)
        if path.rstrip("/") == UMA_PATH:
            recorder.record("uma", environ)
            length = int(environ.get("CONTENT_LENGTH") or 0)
            return uma_token(auth, environ, environ["wsgi.input"].read(length) if length else b"", start_response)
        kind = _kind(method, path)
        recorder.record(kind, environ)
        if kind == "status" and (fault := recorder.status_fault()):
            if fault == "refuse":
                return refuse(environ)
            if fault == "500":
                return respond(start_response, 500, {"code": "InternalError", "type": "InternalError",
                                                     "description": "status store unavailable"})
        header = environ.get("HTTP_AUTHORIZATION", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if (kind == "status" and recorder.status_fault() == "401") or not auth.api(token):
            recorder.record("unauthorized", environ)
            return respond(start_response, 401, {"code": "Unauthorized", "type": "Unauthorized",
                                                 "description": "a valid Bearer token is required"},
                           headers=[("WWW-Authenticate", 'Bearer realm="d4science", error="invalid_token"')])
        if kind == "dismiss":
            from nbplugins.sandbox.servers.processors import DISMISSED

            DISMISSED.add(path.rstrip("/").rsplit("/", 1)[-1])
        return api(environ, start_response)

    return app


# ---------------------------------------------------------------- configuration and process


def write_config(data_dir: Path, port: int) -> tuple[Path, Path]:
    """pygeoapi's config (TinyDB async manager, the three processes) and its OpenAPI document."""
    import yaml

    for sub in ("outputs", "files"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    base = f"http://{harness.HOST}:{port}"
    module = "nbplugins.sandbox.servers.processors"
    config = {
        "server": {
            "bind": {"host": harness.HOST, "port": port}, "url": base,
            "mimetype": "application/json; charset=UTF-8", "encoding": "utf-8", "gzip": False,
            "languages": ["en-US"], "pretty_print": False, "limits": {"default_items": 20, "max_items": 100},
            "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "attribution": "OpenStreetMap"},
            "manager": {"name": "TinyDB", "connection": str(data_dir / "jobs.db"),
                        "output_dir": str(data_dir / "outputs")},
        },
        "logging": {"level": "ERROR"},
        "metadata": {
            "identification": {"title": "CCP (test)", "description": "A CCP-like OGC API - Processes server",
                               "keywords": ["processes"], "keywords_type": "theme", "terms_of_service": "none",
                               "url": base},
            "license": {"name": "CC-BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"},
            "provider": {"name": "nbplugins tests", "url": base},
            "contact": {"name": "Tests", "position": "Tester", "address": "Loopback", "city": "Localhost",
                        "stateorprovince": "None", "postalcode": "0", "country": "None", "phone": "+00",
                        "fax": "+00", "email": "tests@example.org", "url": base, "hours": "always",
                        "instructions": "none", "role": "pointOfContact"},
        },
        "resources": {
            pid: {"type": "process", "processor": {"name": f"{module}.{cls}"}}
            for pid, cls in (("multi-files", "MultiFilesProcessor"), ("failing", "FailingProcessor"),
                             ("sleep", "SleepProcessor"))
        },
    }
    config_path = data_dir / "pygeoapi-config.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    from pygeoapi.openapi import generate_openapi_document

    openapi_path = data_dir / "pygeoapi-openapi.yml"
    openapi_path.write_text(generate_openapi_document(config_path, "yaml"))
    return config_path, openapi_path


class ProcessesServer(ServiceHandle):
    """A running OGC API - Processes test server and its UMA endpoint."""

    def __init__(self, server: harness.ServerProcess, context: str, user_token: str, api_token: str) -> None:
        super().__init__(server, f"http://{harness.HOST}:{server.port}")
        self.token_endpoint = f"{self.url}{UMA_PATH}"
        self.context = context
        self.user_token = user_token
        self.api_token = api_token

    def uma_lifetime(self, seconds: int) -> None:
        """UMA tokens issued from now on last this long."""
        self._call("POST", "uma_lifetime", seconds=seconds)


def start(data_dir: Path, context: str = DEFAULT_CONTEXT, log_dir: Path | None = None, *, port: int | None = None,
          detach: bool = False, issuer: str | None = None, user_tokens: tuple[str, ...] = ()) -> ProcessesServer:
    """Start the server as a subprocess (on ``port``, else a free one); config, jobs and files under ``data_dir``.

    ``issuer``: an OIDC issuer whose access tokens the UMA endpoint accepts too; ``user_tokens``:
    more static user tokens it accepts (e.g. the sandbox's D4Science token).
    """
    now = int(time.time())
    user_token = jwt.encode({"sub": "alice@d4science.org", "iss": "https://accounts.d4science.test/realms/d4science",
                             "aud": "account", "iat": now, "exp": now + 86400, "jti": uuid.uuid4().hex},
                            USER_JWT_KEY, algorithm="HS256")
    api_token = f"static-{uuid.uuid4().hex}"
    port = port or harness.free_port()
    argv = [sys.executable, "-m", "nbplugins.sandbox.servers.processes", "--port", str(port), "--dir",
            str(data_dir), "--context", context]
    if issuer:
        argv += ["--issuer", issuer]
    env = {USER_TOKENS_ENV: ",".join([user_token, *user_tokens]), API_TOKEN_ENV: api_token}
    server = harness.start("processes", argv, port=port, log_dir=log_dir, timeout=120, env=env, detach=detach,
                           ready=harness.http_ready(f"http://{harness.HOST}:{port}/_control/counts"))
    return ProcessesServer(server, context, user_token, api_token)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--context", default=DEFAULT_CONTEXT)
    parser.add_argument("--issuer", default=None, help="an OIDC issuer whose access tokens the UMA grant takes")
    parser.add_argument("--user-token", action="append", default=[],
                        help=f"a user token the UMA grant takes (better: {USER_TOKENS_ENV})")
    parser.add_argument("--api-token", default=None, help=f"a static API token (better: {API_TOKEN_ENV})")
    args = parser.parse_args(argv)
    user_tokens = [*args.user_token, *env_list(os.environ.pop(USER_TOKENS_ENV, None))]
    api_token = args.api_token or os.environ.pop(API_TOKEN_ENV, None)
    if not user_tokens or not api_token:
        parser.error(f"give the user tokens and the API token ({USER_TOKENS_ENV}, {API_TOKEN_ENV})")
    data_dir = args.dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path, openapi_path = write_config(data_dir, args.port)
    os.environ.update(PYGEOAPI_CONFIG=str(config_path), PYGEOAPI_OPENAPI=str(openapi_path),
                      NBP_PROC_FILES=str(data_dir / "files"), NBP_PROC_BASE=f"http://{harness.HOST}:{args.port}")
    from pygeoapi.flask_app import APP

    auth = Auth(args.context, user_tokens, api_token, IssuerUsers(args.issuer) if args.issuer else None)
    auth.issuer = f"http://{harness.HOST}:{args.port}/uma"
    serve(build_app(data_dir, auth, Recorder(), APP.wsgi_app), args.port)


if __name__ == "__main__":
    main()
