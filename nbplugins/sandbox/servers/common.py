"""What the WPS and OGC API - Processes servers share: the control channel, WSGI helpers, the
test-side handle of a running server, and a check of user tokens at an OIDC issuer.

The control channel (``/_control/``, no auth, loopback only) counts requests by kind, keeps
their headers, and injects faults into status requests: :class:`Recorder`, :func:`control`,
:func:`refuse`. :class:`ServiceHandle` is the other side, used by tests and benchmarks.
:class:`IssuerUsers` accepts the access tokens an OIDC issuer (the sandbox's oidc-provider-mock)
hands out, opaque or JWT alike, by asking the issuer's userinfo endpoint, as a resource server
that introspects tokens does.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import mimetypes
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from nbplugins.sandbox import harness


class Recorder:
    """What a test server saw: request counts by kind, headers, and the status fault in force."""

    def __init__(self, keep: int = 5000) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.seen: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.fault: tuple[str, float] | None = None  # (mode, until monotonic)

    def record(self, kind: str, environ: dict[str, Any]) -> None:
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        with self.lock:
            self.counts[kind] += 1
            self.counts["all"] += 1
            self.seen.append({"kind": kind, "path": environ.get("PATH_INFO", ""), "headers": headers})

    def status_fault(self) -> str | None:
        with self.lock:
            if self.fault and time.monotonic() < self.fault[1]:
                return self.fault[0]
            self.fault = None
            return None


def respond(start_response: Callable, status: int, body: bytes | str | dict | list,
            content_type: str = "application/json", headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """Answer a WSGI request with a body (dicts and lists as JSON)."""
    from http import HTTPStatus

    if isinstance(body, dict | list):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    start_response(f"{status} {HTTPStatus(status).phrase}",
                   [("Content-Type", content_type), ("Content-Length", str(len(data))), *headers])
    return [data]


def control(recorder: Recorder, environ: dict[str, Any], start_response: Callable,
            extra: Callable[[str, dict[str, list[str]], bytes], Any] | None = None) -> list[bytes]:
    """The ``/_control/`` endpoints common to both servers; ``extra`` handles the rest (or None)."""
    name = environ["PATH_INFO"].removeprefix("/_control/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    body = read_body(environ)
    with recorder.lock:
        if name == "count":
            kind = query.get("kind", ["all"])[0]
            return respond(start_response, 200, {"kind": kind, "count": recorder.counts[kind]})
        if name == "counts":
            return respond(start_response, 200, dict(recorder.counts))
        if name == "reset":
            recorder.counts.clear()
            recorder.seen.clear()
            return respond(start_response, 200, {"ok": True})
        if name == "fault":
            mode = query.get("mode", ["none"])[0]
            seconds = float(query.get("seconds", ["0"])[0])
            if mode not in ("500", "401", "refuse", "none"):
                return respond(start_response, 400, {"error": f"unknown fault mode {mode!r}"})
            recorder.fault = None if mode == "none" or seconds <= 0 else (mode, time.monotonic() + seconds)
            return respond(start_response, 200, {"mode": mode, "seconds": seconds})
        if name == "headers":
            match = query.get("match", [""])[0]
            found = [s for s in recorder.seen if s["kind"] == match or (match and match in s["path"])]
            return respond(start_response, 200, found)
    answer = extra(name, query, body) if extra else None
    if answer is None:
        return respond(start_response, 404, {"error": f"no control endpoint {name!r}"})
    return respond(start_response, 200, answer)


def refuse(environ: dict[str, Any]) -> list[bytes]:
    """Close the connection without an answer (the client sees it dropped), as a dying server does."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("refused by the test server's fault injection")


def serve_static(root: Path, relative: str, start_response: Callable, reread_empty: bool = False) -> list[bytes]:
    """A file under ``root`` (404 outside it or when missing).

    ``reread_empty``: PyWPS rewrites status files in place (truncate, then write), so a read can
    land in between and see nothing; reread for up to 0.5 s so the tests do not flake on it.
    """
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return respond(start_response, 404, {"error": "no such file"})
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = path.read_bytes()
    for _ in range(50 if reread_empty else 0):
        if data:
            break
        time.sleep(0.01)
        data = path.read_bytes()
    return respond(start_response, 200, data, kind)


def serve(app: Callable, port: int) -> None:
    """Serve a WSGI app on 127.0.0.1:port, threaded, quietly."""
    import logging

    from werkzeug.serving import run_simple

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    run_simple(harness.HOST, port, app, threaded=True, use_reloader=False, use_debugger=False)


def read_body(environ: dict[str, Any]) -> bytes:
    """The request body, read once and put back so the app behind can read it too."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


_read_body = read_body  # the name the servers used when they lived in tests/servers


def env_list(value: str | None) -> list[str]:
    """Comma-separated values from an environment variable (tokens never go on a command line)."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


class IssuerUsers:
    """Access tokens of an OIDC issuer, accepted when its userinfo endpoint accepts them.

    The sandbox's issuer (oidc-provider-mock) hands out opaque access tokens, so asking the
    issuer is the one check that works for every token shape, and it sees revocations too.
    """

    def __init__(self, issuer: str, timeout: float = 10.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.timeout = timeout
        self._userinfo: str | None = None

    def userinfo_endpoint(self) -> str:
        if self._userinfo is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            with urllib.request.urlopen(url, timeout=self.timeout) as answer:  # noqa: S310 - loopback issuer
                self._userinfo = str(json.loads(answer.read())["userinfo_endpoint"])
        return self._userinfo

    def claims(self, token: str) -> dict[str, Any] | None:
        """The user's claims (``sub`` and the rest of userinfo) when the issuer accepts ``token``, else None."""
        if not token:
            return None
        try:
            request = urllib.request.Request(self.userinfo_endpoint(), headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - loopback issuer
                claims = json.loads(answer.read())
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            return None
        if not isinstance(claims, dict) or not claims.get("sub"):
            return None
        return {**claims, "iss": self.issuer}


class ServiceHandle:
    """The test process's side of a running test server: its URL and its control channel."""

    def __init__(self, server: harness.ServerProcess, url: str) -> None:
        self.server = server
        self.url = url
        self.base = f"http://{harness.HOST}:{server.port}"

    def _call(self, method: str, name: str, body: Any = None, **query: Any) -> Any:
        from urllib.parse import urlencode

        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        url = f"{self.base}/_control/{name}" + (f"?{urlencode(query)}" if query else "")
        request = urllib.request.Request(url, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return json.loads(answer.read())

    def count(self, kind: str = "all") -> int:
        """Requests of this kind the server answered (or dropped) since the last reset."""
        return int(self._call("GET", "count", kind=kind)["count"])

    def counts(self) -> dict[str, int]:
        return self._call("GET", "counts")

    def reset_counts(self) -> None:
        self._call("POST", "reset")

    def status_fault(self, mode: str, seconds: float) -> None:
        """Status requests answer ``500`` (or ``401``) or are dropped (``refuse``) for ``seconds``."""
        self._call("POST", "fault", mode=mode, seconds=seconds)

    def clear_fault(self) -> None:
        self._call("POST", "fault", mode="none", seconds=0)

    def headers_seen(self, path_or_kind: str) -> list[dict[str, str]]:
        """Headers of the requests whose kind is this, or whose path contains it (oldest first)."""
        return [s["headers"] for s in self._call("GET", "headers", match=path_or_kind)]

    def expire_uma(self) -> None:
        """Every UMA token issued so far is refused from now on (OGC API - Processes server only)."""
        self._call("POST", "expire_uma")

    def log(self) -> str:
        return self.server.log()

    def stop(self) -> None:
        self.server.stop()
