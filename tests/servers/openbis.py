"""A fake openBIS application server: the v3 JSON-RPC calls pybis and the ELN's services make.

Run as a process: ``python -m tests.servers.openbis --port P --state DIR [--user NAME:PASSWORD]...
[--tls]``. It serves ``POST /openbis/openbis/rmi-application-server-v3.json`` with ``login``,
``logout``, ``isSessionActive``, ``getSessionInformation`` and ``getServerInformation``,
as openBIS does: JSON-RPC 2.0 ``{"method", "params": [token, ...], "id"}`` answered with
``{"result"}`` or ``{"error": {"message"}}``. Session tokens look like openBIS's
(``<user>-<timestamp><hex>``), personal access tokens like ``$pat-<user>-<id>``. An invalid
token in ``getSessionInformation`` is an error whose message repeats the token, as openBIS's
``InvalidSessionException`` does (a canary for services that pass messages on).

Test controls: ``POST /_test/pat {"user"}`` -> ``{"token"}``; ``POST /_test/session {"user"}``
-> ``{"token"}`` (a session without a password); ``POST /_test/expire {"token"}``;
``GET /_test/stats`` -> calls per method. With ``--tls`` it serves HTTPS with a self-signed
certificate written to ``DIR/cert.pem`` (pybis refuses plain HTTP).
"""

from __future__ import annotations

import argparse
import json
import secrets
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

V3 = "/openbis/openbis/rmi-application-server-v3.json"


class State:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.sessions: dict[str, str] = {}  # token -> user
        self.pats: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def new_session(self, user: str) -> str:
        token = f"{user}-{time.strftime('%y%m%d%H%M%S')}{secrets.token_hex(16).upper()}"
        with self.lock:
            self.sessions[token] = user
        return token

    def new_pat(self, user: str) -> str:
        token = f"$pat-{user}-{time.strftime('%y%m%d%H%M%S')}{secrets.token_hex(8)}x{secrets.token_hex(6).upper()}"
        with self.lock:
            self.sessions[token] = user
            self.pats.add(token)
        return token


def session_information(token: str, user: str, pat: bool) -> dict:
    """What openBIS's ``getSessionInformation`` answers (Jackson JSON with ``@type``/``@id``)."""
    person = {"@type": "as.dto.person.Person", "@id": 2, "userId": user, "firstName": user.title(),
              "lastName": "Test", "email": f"{user}@example.org", "active": True, "permId": {
                  "@type": "as.dto.person.id.PersonPermId", "@id": 3, "permId": user}}
    return {"@type": "as.dto.session.SessionInformation", "@id": 1, "userName": user, "homeGroupCode": None,
            "sessionToken": token, "personalAccessTokenSessionName": "eln" if pat else None,
            "personalAccessTokenSession": pat, "person": person, "creatorPerson": person}


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:  # quiet: counts are in /_test/stats
            pass

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> object:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/_test/stats":
                with state.lock:
                    self._send(200, dict(state.counts))
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            try:
                body = self._body()
            except ValueError:
                self._send(400, {"error": "not JSON"})
                return
            if self.path.startswith("/_test/"):
                self._control(self.path[len("/_test/"):], body if isinstance(body, dict) else {})
            elif self.path == V3:
                self._rpc(body)
            else:
                self._send(404, {"error": "not found"})

        def _control(self, what: str, body: dict) -> None:
            if what == "pat":
                self._send(200, {"token": state.new_pat(body["user"])})
            elif what == "session":
                self._send(200, {"token": state.new_session(body["user"])})
            elif what == "expire":
                with state.lock:
                    state.sessions.pop(body["token"], None)
                self._send(200, {})
            else:
                self._send(404, {"error": "unknown control"})

        def _rpc(self, request: object) -> None:
            if not isinstance(request, dict) or not isinstance(request.get("params"), list):
                self._send(200, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid request"}})
                return
            method, params, rid = request.get("method"), request["params"], request.get("id")
            with state.lock:
                state.counts[str(method)] += 1

            def result(value: object) -> None:
                self._send(200, {"jsonrpc": "2.0", "id": rid, "result": value})

            def error(message: str) -> None:
                self._send(200, {"jsonrpc": "2.0", "id": rid, "error": {
                    "code": 0, "message": message, "data": {"exceptionTypeName": "ch.systemsx.cisd.common."
                                                            "exceptions.InvalidSessionException"}}})

            token = params[0] if params else None
            user = state.sessions.get(token) if isinstance(token, str) else None
            if method == "login":
                name, password = (params + [None, None])[:2]
                result(state.new_session(name) if state.users.get(name) == password and name else None)
            elif method == "logout":
                with state.lock:
                    state.sessions.pop(token, None)
                result(None)
            elif method == "isSessionActive":
                result(user is not None)
            elif method == "getSessionInformation":
                if user is None:
                    error(f"Session token '{token}' is invalid: user is not logged in.")
                else:
                    result(session_information(token, user, token in state.pats))
            elif method == "getServerInformation":
                if user is None:
                    error(f"Session token '{token}' is invalid: user is not logged in.")
                else:
                    result({"api-version": "3.7", "project-samples-enabled": "true",
                            "authentication-service": "file-authentication-service",
                            "personal-access-tokens-enabled": "true"})
            else:
                error(f"Method '{method}' not found")

    return Handler


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): ``cert.pem``, ``key.pem``."""
    from tests.servers.onedata import make_certificate as make

    return make(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True, help="where cert.pem goes with --tls")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD")
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    users = dict(item.split(":", 1) for item in args.user)
    context = None
    if args.tls:  # the certificate exists before the port answers
        cert, key = make_certificate(args.state)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(State(users)))
    server.daemon_threads = True
    if context is not None:  # handshakes happen in the request threads, not in the accept loop
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.serve_forever()


def start(state: Path, users: dict[str, str] | None = None, *, tls: bool = True, **kwargs: object):
    """Start the fake openBIS; ``server.extra["ca"]`` is its certificate (with ``tls``)."""
    import sys

    from tests.servers import harness

    state.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tests.servers.openbis", "--port", "{port}", "--state", str(state)]
    argv += [f"--user={name}:{password}" for name, password in (users or {}).items()]
    scheme = "https" if tls else "http"
    if tls:
        argv.append("--tls")
    root = Path(__file__).resolve().parents[2]
    server = harness.start("openbis", argv, url=f"{scheme}://{harness.HOST}:{{port}}", cwd=root,
                           ready=None, **kwargs)  # type: ignore[arg-type]
    if tls:
        server.extra["ca"] = str(state / "cert.pem")
    return server


if __name__ == "__main__":
    main()
