"""nbplugins.http against a real loopback HTTP server: tokens in headers, retries of 5xx and
resets within the policy, one refresh after a 401, one-line redacted errors."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nbplugins import secrets
from nbplugins.errors import AuthError, DeadlineExceeded, ServiceError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry
from nbplugins.tokens import Token
from tests.servers import harness
from tests.servers.faultproxy import FaultProxy, Faults

FAST = Retry(deadline=20, initial=0.01, cap=0.05, error_budget=6)


class Service(ThreadingHTTPServer):
    """A scripted service: what each path answers, and every request it got."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((harness.HOST, 0), Handler)
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.url = f"http://{harness.HOST}:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Service

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _answer(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        path = self.path.split("?")[0]
        auth = self.headers.get("Authorization")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.seen.append((self.command, self.path, auth))
            self.server.hits[path] += 1
            hits = self.server.hits[path]
        if path == "/echo":
            self._answer(200, {"method": self.command, "auth": auth, "body": body.decode()})
        elif path == "/busy":  # busy twice, then fine
            if hits <= 2:
                self._answer(503, {"message": "slow down"}, {"Retry-After": "0"})
            else:
                self._answer(200, {"attempt": hits})
        elif path == "/down":
            self._answer(503, b"overloaded\n")
        elif path == "/fresh-only":
            self._answer(200 if auth == "Bearer fresh" else 401, {"error": "invalid_token"})
        elif path == "/missing":
            self._answer(404, {"error": {"description": "no such job"}})
        elif path == "/conflict":
            self._answer(409, {"message": "already there"})
        elif path == "/invalid":  # what FastAPI and OGC API servers answer
            self._answer(422, {"detail": "seed must be an integer"})
        else:
            self._answer(500, b"internal trouble\nsecond line\n")

    do_GET = do_POST = do_PUT = do_DELETE = _handle


@pytest.fixture
def service() -> Iterator[Service]:
    server = Service()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class Tokens:
    """A token provider that hands out "stale" until asked for a fresh one."""

    def __init__(self) -> None:
        self.refreshes = 0

    def get(self, force_refresh: bool = False) -> Token:
        if force_refresh:
            self.refreshes += 1
        return Token(value="fresh" if self.refreshes else "stale", source="test")


def test_each_method_sends_the_token_in_the_configured_header(service):
    client = HttpClient(service.url, service="svc", token=Tokens(), header="X-Auth", scheme="", retry=FAST)
    for call in (client.get, client.post, client.put, client.delete):
        assert call("/echo", data="x").json()["method"] == call.__name__.upper()
    assert [s[0] for s in service.seen] == ["GET", "POST", "PUT", "DELETE"]
    bearer = HttpClient(service.url + "/", service="svc", token=Tokens(), retry=FAST)
    assert bearer.get("echo").json()["auth"] == "Bearer stale"  # one slash between base and path
    assert bearer.url("https://elsewhere.example/x") == "https://elsewhere.example/x"
    client.close()


def test_503_is_retried_within_the_policy_and_then_succeeds(service):
    client = HttpClient(service.url, service="svc", retry=FAST)
    assert client.get("/busy").json() == {"attempt": 3}
    assert service.hits["/busy"] == 3


def test_a_status_in_allow_is_returned_not_retried_or_raised(service):
    client = HttpClient(service.url, service="svc", retry=FAST)
    assert client.get("/down", allow=(503,)).status_code == 503
    assert client.get("/missing", allow=[404]).status_code == 404
    assert service.hits["/down"] == 1


def test_a_server_that_stays_down_ends_in_one_line_after_the_error_budget(service):
    client = HttpClient(service.url, service="svc", retry=FAST.with_(error_budget=3))
    with pytest.raises(DeadlineExceeded, match=r"svc GET .*/down: gave up after 3 consecutive errors"):
        client.get("/down")
    assert service.hits["/down"] == 3


def test_client_errors_say_the_status_and_the_services_reason(service):
    client = HttpClient(service.url, service="svc", retry=FAST)
    with pytest.raises(ServiceError, match=r"svc: GET .*/missing answered HTTP 404: no such job") as info:
        client.get("/missing")
    assert info.value.status == 404
    with pytest.raises(ServiceError, match=r"HTTP 409: already there"):
        client.post("/conflict")
    with pytest.raises(ServiceError, match=r"HTTP 422: seed must be an integer$"):
        client.post("/invalid")
    assert service.hits["/missing"] == 1  # a 4xx is not retried


def test_one_refresh_after_a_401_and_auth_error_after_a_second(service):
    tokens = Tokens()
    client = HttpClient(service.url, service="svc", token=tokens, retry=FAST)
    assert client.get("/fresh-only").status_code == 200
    assert tokens.refreshes == 1 and [s[2] for s in service.seen] == ["Bearer stale", "Bearer fresh"]

    class Never(Tokens):
        def get(self, force_refresh: bool = False) -> Token:
            return Token(value="never-accepted-value", source="test")

    with pytest.raises(AuthError, match=r"svc refused the token from test twice \(HTTP 401\)") as info:
        HttpClient(service.url, service="svc", token=Never(), retry=FAST).get("/fresh-only")
    assert "never-accepted-value" not in str(info.value)


def test_connection_resets_are_retried(service):
    with FaultProxy(int(service.url.rsplit(":", 1)[1]), Faults(reset=0.5, seed=7)) as proxy:
        client = HttpClient(proxy.url, service="svc", retry=FAST.with_(error_budget=20))
        for _ in range(6):
            assert client.get("/echo").status_code == 200
        assert proxy.count(fault="reset") > 0


def test_an_unreachable_service_and_secrets_in_urls_are_named_redacted(canary):
    secrets.register(canary)
    client = HttpClient(f"http://user:{canary}@{harness.HOST}:{harness.free_port()}", service="svc",
                        retry=FAST.with_(error_budget=2))
    with pytest.raises(ServiceError) as info:
        client.get(f"/x?key={canary}")
    assert canary not in str(info.value) and "svc" in str(info.value) and "***" in str(info.value)
