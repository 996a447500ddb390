"""A loopback HTTP proxy that injects faults: connection resets and 503s on a share of requests.

Threaded, real sockets. Each request gets its own upstream connection (``Connection: close``
is forced both ways), so faults hit single requests: ``reset`` closes the client socket with
an RST before forwarding, ``503`` answers an S3-style ``SlowDown`` error, ``cut`` forwards
the request and resets the connection halfway through the response body. It also counts
requests by method and path so tests can count PUTs at the server.

The OSCAR server counts the S3 requests its clients make through one (``count_requests``);
``tests/servers/faultproxy.py`` re-exports this module for the tests.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class Faults:
    """Probabilities of each fault per request (the rest pass through)."""

    reset: float = 0.0
    error_503: float = 0.0
    cut: float = 0.0
    seed: int = 1234
    only_methods: tuple[str, ...] = ()  # empty: every method


@dataclass
class Record:
    method: str
    path: str
    fault: str | None


@dataclass
class FaultProxy:
    """``with FaultProxy(upstream_port, Faults(...)) as proxy: proxy.url``."""

    upstream_port: int
    faults: Faults = field(default_factory=Faults)
    requests: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="faultproxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            socket.create_connection((HOST, self.port), timeout=1).close()
        self._thread.join(timeout=5)
        self._sock.close()

    def count(self, method: str | None = None, contains: str = "", fault: str | None | bool = False) -> int:
        """Requests seen with this method and path substring (``fault=None``: only clean ones)."""
        with self._lock:
            return sum(1 for r in self.requests
                       if (method is None or r.method == method) and contains in r.path
                       and (fault is False or r.fault == fault))

    def faults_by_kind(self) -> Counter[str]:
        with self._lock:
            return Counter(r.fault for r in self.requests if r.fault)

    # -- internals

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            if self._stop.is_set():
                client.close()
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _decide(self, method: str) -> str | None:
        f = self.faults
        if f.only_methods and method not in f.only_methods:
            return None
        with self._lock:
            roll = self._rng.random()
        if roll < f.reset:
            return "reset"
        if roll < f.reset + f.error_503:
            return "503"
        if roll < f.reset + f.error_503 + f.cut:
            return "cut"
        return None

    def _handle(self, client: socket.socket) -> None:
        upstream = None
        try:
            head, rest = _read_head(client)
            if head is None:
                client.close()
                return
            lines = head.split(b"\r\n")
            method, path = lines[0].split(b" ")[:2]
            method_s, path_s = method.decode(), path.decode("latin-1")
            fault = self._decide(method_s)
            with self._lock:
                self.requests.append(Record(method_s, path_s, fault))
            if fault == "reset":
                _reset(client)
                return
            expect = any(ln.lower().startswith(b"expect:") and b"100-continue" in ln.lower() for ln in lines[1:])
            headers = [ln for ln in lines[1:]
                       if ln and not ln.lower().startswith((b"connection:", b"keep-alive:", b"expect:"))]
            length = 0
            for ln in headers:
                if ln.lower().startswith(b"content-length:"):
                    length = int(ln.split(b":", 1)[1])
            if fault == "503":
                if not expect:
                    _drain(client, rest, length)
                body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                        b"<Message>Please reduce your request rate.</Message></Error>")
                client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                               b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
                client.close()
                return
            if expect:
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            upstream = socket.create_connection((HOST, self.upstream_port), timeout=60)
            new_head = b"\r\n".join([lines[0], *headers, b"Connection: close"]) + b"\r\n\r\n"
            upstream.sendall(new_head + rest)
            if any(ln.lower().startswith(b"transfer-encoding:") for ln in headers):
                threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            sent = len(rest)
            while sent < length:
                chunk = client.recv(min(1 << 20, length - sent))
                if not chunk:
                    break
                upstream.sendall(chunk)
                sent += len(chunk)
            relayed = 0
            limit = None
            while True:
                chunk = upstream.recv(1 << 18)
                if not chunk:
                    break
                if fault == "cut":
                    if limit is None:
                        limit = max(200, (len(chunk) // 2))
                    if relayed + len(chunk) >= limit:
                        client.sendall(chunk[: max(0, limit - relayed)])
                        _reset(client)
                        return
                client.sendall(chunk)
                relayed += len(chunk)
            client.shutdown(socket.SHUT_WR)
            client.close()
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
        finally:
            if upstream is not None:
                upstream.close()


def _pump(client: socket.socket, upstream: socket.socket) -> None:
    """Copy the rest of the request (sized or chunked) upstream until the client stops."""
    try:
        while True:
            chunk = client.recv(1 << 20)
            if not chunk:
                return
            upstream.sendall(chunk)
    except OSError:
        return


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > 1 << 20:
            return None, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _drain(sock: socket.socket, rest: bytes, length: int) -> None:
    got = len(rest)
    sock.settimeout(10)
    while got < length:
        chunk = sock.recv(min(1 << 20, length - got))
        if not chunk:
            return
        got += len(chunk)


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed server or a middlebox does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()
