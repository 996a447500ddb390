"""The hub API client against a real JupyterHub on 127.0.0.1: users, servers started and stopped
(named ones too), tokens, Bearer tokens from the token layer, 401 and 403 explained, an address
that is no JupyterHub, and the token in no log or error.

The EOSC EU Node's ``services/jwt`` (a Check-in JWT in, the hub API out) is played by
:class:`JwtService` below: it checks the JWT (HS256 with the tests' key, expiry, audience),
answers 401 otherwise, and forwards the request to the hub with an API token of that user.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests

from nbplugins import secrets
from nbplugins.errors import AuthError, NbpluginsError, ValidationError
from nbplugins.hub import api
from nbplugins.retry import Retry
from tests.servers import harness, jupyterhub

JWT_KEY = "test-signing-key-not-a-secret-0123456789"  # the make_jwt fixture's key
AUDIENCE = "notebooks"  # what the JWT service expects
FAST = Retry(deadline=20, initial=0.05, cap=0.2, error_budget=3)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[harness.ServerProcess]:
    """A real JupyterHub (dummy login, local spawner) with named servers allowed."""
    state = tmp_path_factory.mktemp("jupyterhub-api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jupyterhub, "CONFIG", jupyterhub.CONFIG + "c.JupyterHub.allow_named_servers = True\n")
        server = jupyterhub.start(state, state / "homes")
    yield server
    jupyterhub.stop(server)


def service_token(hub: harness.ServerProcess) -> str:
    return str(hub.extra["service_token"])


class JwtService:
    """The EOSC EU Node's ``services/jwt`` for tests: JWT checked here, the request forwarded as that user."""

    def __init__(self, hub: harness.ServerProcess) -> None:
        self.hub_api = f"{hub.url}hub/api"
        self.admin = {"Authorization": f"token {service_token(hub)}"}
        self.user_tokens: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.server = ThreadingHTTPServer((harness.HOST, 0), self._handler())
        self.url = f"http://{harness.HOST}:{self.server.server_port}/services/jwt"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _user_token(self, name: str) -> str:
        if name not in self.user_tokens:
            quoted = urllib.parse.quote(name, safe="")
            requests.post(f"{self.hub_api}/users/{quoted}", headers=self.admin, timeout=10)  # 409 if there
            made = requests.post(f"{self.hub_api}/users/{quoted}/tokens", headers=self.admin, timeout=10,
                                 json={"note": "services/jwt"})
            made.raise_for_status()
            self.user_tokens[name] = made.json()["token"]
        return self.user_tokens[name]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> None:
                path = self.path.split("/services/jwt", 1)[1] if self.path.startswith("/services/jwt") else None
                if path is None:
                    return self._answer(404, b'{"status": 404, "message": "Not Found"}')
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {"Content-Type": "application/json"} if body else {}
                if path in ("", "/"):  # the API root answers without a token, as the hub's does
                    forwarded = requests.get(f"{service.hub_api}/", timeout=10)
                    return self._answer(forwarded.status_code, forwarded.content)
                auth = self.headers.get("Authorization", "")
                try:
                    if not auth.lower().startswith("bearer "):
                        raise jwt.InvalidTokenError("no bearer token")
                    claims = jwt.decode(auth[7:], JWT_KEY, algorithms=["HS256"], audience=AUDIENCE)
                except jwt.PyJWTError as exc:
                    service.counts["refused"] += 1
                    return self._answer(401, json.dumps({"status": 401, "message": type(exc).__name__}).encode())
                name = claims.get("preferred_username") or claims["sub"]
                service.counts[name] += 1
                headers["Authorization"] = f"token {service._user_token(name)}"
                forwarded = requests.request(self.command, f"{service.hub_api}{path}", data=body, headers=headers,
                                             timeout=30)
                self._answer(forwarded.status_code, forwarded.content,
                             forwarded.headers.get("Content-Type", "application/json"))

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _forward  # noqa: N815

        return Handler


@pytest.fixture(scope="module")
def jwt_service(hub) -> Iterator[JwtService]:
    service = JwtService(hub)
    yield service
    service.close()


@pytest.fixture
def not_a_hub() -> Iterator[str]:
    """A web server that is no JupyterHub: every path is an HTML 404 page."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = b"<html><body>Not here</body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((harness.HOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{harness.HOST}:{server.server_port}/"
    server.shutdown()
    server.server_close()


def user_jwt(make_jwt, name: str, **claims) -> str:
    return make_jwt(sub=f"{name}-sub", preferred_username=name, aud=AUDIENCE, **claims)


def write_token(path: Path, value: str) -> None:
    path.write_text(value)
    path.chmod(0o600)


# ----------------------------------------------------------------------------- addresses


def test_hub_names_and_urls_resolve_to_their_api_base(monkeypatch, tmp_path):
    assert api.api_url("eosc") == "https://eu-1.notebooks.open-science-cloud-user-apps.eu/services/jwt"
    assert api.api_url("egi") == "https://notebooks.egi.eu/hub/api"
    assert api.api_url("https://hub.example.org/hub/home") == "https://hub.example.org/hub/api"
    assert api.api_url("https://hub.example.org/x/hub/api/") == "https://hub.example.org/x/hub/api"
    assert api.api_url("https://node.example.org/services/jwt") == "https://node.example.org/services/jwt"
    (tmp_path / "c.toml").write_text('[hubs]\neosc = "https://eosc.example.org/"\ndefault = "eosc"\n'
                                     '[hubs.urls]\nworkshop = "https://workshop.example.org"\n')
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(tmp_path / "c.toml"))
    assert api.api_url() == "https://eosc.example.org/services/jwt"
    assert api.api_url("workshop") == "https://workshop.example.org/hub/api"
    with pytest.raises(ValidationError) as info:
        api.api_url("nowhere")
    assert "known:" in str(info.value)


# ----------------------------------------------------------------------------- the real hub


def test_the_hub_takes_its_api_token_as_a_bearer_token(hub, monkeypatch):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", service_token(hub))  # through the token layer
    with api.HubApi(hub.url) as client:
        assert client.url == f"{hub.url}hub/api"
        assert client.whoami()["kind"] == "service"
        assert isinstance(client.users(), list)
    with api.HubApi(hub.url, token=service_token(hub)) as client:  # or given
        assert client.whoami()["name"] == "nbplugins-tests"


def test_start_and_stop_a_named_and_the_default_server_waiting_for_each(hub):
    with api.HubApi(hub.url, token=service_token(hub)) as client:
        client.request("POST", "/users/ada")
        started = client.start("ada", "lab1")
        assert started and started["ready"] and started["url"] == "/user/ada/lab1/"
        client.start("ada")
        assert set(client.servers("ada")) == {"", "lab1"}
        rows = api.server_rows({"ada": client.user("ada")})
        assert [(r["server"], r["state"]) for r in rows] == [("(default)", "ready"), ("lab1", "ready")]
        client.start("ada", "lab1")  # already running: nothing to do
        client.stop("ada", "lab1")
        client.stop("ada")
        assert client.servers("ada") == {}


def test_tokens_are_listed_and_a_new_one_is_a_registered_secret(hub):
    with api.HubApi(hub.url, token=service_token(hub)) as client:
        client.request("POST", "/users/tokenuser")
        made = client.create_token("tokenuser", note="from-test", expires_in=600)
        assert secrets.redact(made["token"]) == secrets.MARKER
        assert "from-test" in [t["note"] for t in client.tokens("tokenuser")]
    with api.HubApi(hub.url, token=made["token"]) as own:
        assert own.whoami()["name"] == "tokenuser"
        assert own.servers() == {}  # the token's own user


def test_a_403_is_explained_with_the_token_diagnosis(hub):
    with api.HubApi(hub.url, token=service_token(hub)) as admin:
        admin.request("POST", "/users/limited")
        limited = admin.create_token("limited", scopes=["read:users:name!user=limited"])["token"]
    with api.HubApi(hub.url, token=limited) as client, pytest.raises(AuthError) as info:
        client.users()
    message = str(info.value)
    assert "HTTP 403: Action is not authorized" in message and "list:users" in message
    assert "explicit token" in message and "opaque" in message and limited not in message


def test_a_token_the_hub_does_not_know_is_refreshed_once_then_explained(hub, tmp_path, monkeypatch, canary):
    path = tmp_path / "token"
    write_token(path, f"unknown-{canary}")
    monkeypatch.setenv("NBPLUGINS_TOKEN_FILE", str(path))
    with api.HubApi(hub.url, retry=FAST) as client, pytest.raises(AuthError) as info:
        client.users()
    message = str(info.value)
    assert "Missing or invalid credentials" in message and f"token file {path}" in message
    assert canary not in message


# ----------------------------------------------------------------------------- the JWT service (EOSC EU Node)


def test_a_check_in_jwt_from_the_token_file_reaches_the_hub_as_its_user(jwt_service, make_jwt, tmp_path,
                                                                        monkeypatch):
    path = tmp_path / "token"
    write_token(path, user_jwt(make_jwt, "grace"))
    monkeypatch.setenv("NBPLUGINS_TOKEN_FILE", str(path))
    with api.HubApi(jwt_service.url) as client:
        assert client.whoami()["name"] == "grace"
        assert client.servers() == {}
        write_token(path, user_jwt(make_jwt, "heidi"))  # the hub rotated the token file
        assert client.whoami()["name"] == "heidi"
    assert jwt_service.counts["grace"] == 3 and jwt_service.counts["heidi"] == 1


def test_a_401_is_refreshed_once_then_explained_with_the_diagnosis(jwt_service, make_jwt, tmp_path, monkeypatch,
                                                                   canary):
    (tmp_path / "c.toml").write_text(f'[token]\naudience = "{AUDIENCE}"\n')
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(tmp_path / "c.toml"))
    wrong = make_jwt(sub="ivan", aud="nbplugins", jti=canary)  # for another audience
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", wrong)
    before = jwt_service.counts["refused"]
    with api.HubApi(jwt_service.url, retry=FAST) as client, pytest.raises(AuthError) as info:
        client.users()
    message = str(info.value)
    assert "HTTP 401" in message and f"audience is nbplugins, the service expects {AUDIENCE}" in message
    assert jwt_service.counts["refused"] - before == 2  # one forced refresh, then the diagnosis
    assert canary not in message and wrong not in message


# ----------------------------------------------------------------------------- bad input and secrets


def test_an_address_that_is_not_a_jupyterhub_says_so_in_one_line(not_a_hub):
    with api.HubApi(not_a_hub, token="some-token-value", retry=FAST) as client, \
            pytest.raises(ValidationError) as info:
        client.users()
    assert f"{not_a_hub}hub/api is not a JupyterHub API" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("BREW", "/users", "HTTP method 'BREW'"),
    ("GET", "https://elsewhere.example.org/steal", "not a URL"),
])
def test_bad_requests_are_refused_before_sending(hub, method, path, expected):
    with api.HubApi(hub.url, token=service_token(hub)) as client, pytest.raises(ValidationError) as info:
        client.request(method, path)
    assert expected in str(info.value)


def test_the_token_is_in_no_log_record_or_error(jwt_service, hub, make_jwt, monkeypatch, canary, caplog):
    token = user_jwt(make_jwt, "judy", jti=canary)
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    errors = []
    with api.HubApi(jwt_service.url, retry=FAST) as client:
        shown = json.dumps(client.whoami()) + json.dumps(client.servers())
        for path in ("/users", "/users/nobody-at-all"):
            with pytest.raises(NbpluginsError) as info:
                client.request("GET", path)
            errors.append("".join(traceback.format_exception(info.value)))
    everything = caplog.text + shown + "".join(errors)
    assert "GET" in caplog.text and token not in everything and canary not in everything
