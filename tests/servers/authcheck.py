"""A loopback HTTP API that accepts only tokens its test allows (a stand-in resource server).

Runs in a thread of the test process on a real socket, so the client under test goes
through its full HTTP stack. ``seen`` records the Authorization values it received.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AuthCheckServer:
    """``accept(token) -> bool`` decides; 200 with JSON when accepted, 401 otherwise."""

    def __init__(self, accept: Callable[[str], bool], fail_first: int = 0, fail_status: int = 503) -> None:
        self.accept = accept
        self.seen: list[str] = []
        self.fail_first = fail_first
        self.fail_status = fail_status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ")
                outer.seen.append(token)
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self._send(outer.fail_status, {"error": "try again"})
                elif outer.accept(token):
                    self._send(200, {"ok": True})
                else:
                    self._send(401, {"error": {"id": "unauthorized", "description": "invalid token"}})

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> AuthCheckServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
