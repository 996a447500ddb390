"""Who a token belongs to: a small registry of auth backends and a short-lived lookup cache.

``openbis`` asks openBIS's v3 JSON-RPC API (``getSessionInformation``), so session tokens and
personal access tokens (``$pat-<user>-<id>``) both work and the user name is never guessed
from the token text; ``oidc`` asks a configured issuer's userinfo endpoint and reads a
configured claim; ``token-file`` reads ``token user`` lines from a file. Every lookup is
TLS-verified and bounded in time. A token is never put in a message, a log line or a cache
key: the cache is keyed by its SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nbplugins.errors import ConfigError, NbpluginsError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry
from nbplugins.serve.base import Unauthorized, Upstream

OPENBIS_V3 = "openbis/openbis/rmi-application-server-v3.json"
INVALID = "the token is invalid or expired; log in again and retry"


class AuthBackend:
    """Maps a token to a user name, or raises :class:`Unauthorized` (or :class:`Upstream`)."""

    name = "auth"

    def user(self, token: str) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


BACKENDS: dict[str, Callable[..., AuthBackend]] = {}


def register(name: str) -> Callable[[type[AuthBackend]], type[AuthBackend]]:
    """Class decorator: make a backend available as ``name``."""

    def add(cls: type[AuthBackend]) -> type[AuthBackend]:
        BACKENDS[name] = cls
        cls.name = name
        return cls

    return add


def create(name: str, **options: Any) -> AuthBackend:
    """The backend registered as ``name``, built with ``options``."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown auth backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}") from None
    return factory(**options)


def _policy(timeout: float) -> Retry:
    """Retries of one lookup: a person waits behind it, so a few quick tries within ``timeout``."""
    return Retry(deadline=timeout, initial=0.2, cap=1.0, error_budget=3)


def _upstream(service: str, exc: NbpluginsError) -> Upstream:
    return Upstream(f"{service} could not check the token: {exc}")


@register("openbis")
class OpenbisAuth(AuthBackend):
    """openBIS: ``getSessionInformation`` over the v3 JSON-RPC API; the user is ``userName``."""

    def __init__(self, url: str, *, timeout: float = 10.0, verify: bool | str = True) -> None:
        self.client = HttpClient(url, service="openBIS", retry=_policy(timeout),
                                 timeout=(min(5.0, timeout), timeout), verify=verify)

    def user(self, token: str) -> str:
        request = {"method": "getSessionInformation", "params": [token], "id": "1", "jsonrpc": "2.0"}
        try:
            response = self.client.post(OPENBIS_V3, json=request)
        except NbpluginsError as exc:
            raise _upstream("openBIS", exc) from None
        try:
            reply = response.json()
        except ValueError:
            raise Upstream("openBIS answered getSessionInformation with something that is not JSON") from None
        if not isinstance(reply, dict):
            raise Upstream("openBIS answered getSessionInformation with something that is not a JSON-RPC reply")
        if reply.get("error") is not None:  # openBIS repeats the token in its message: never passed on
            raise Unauthorized(f"openBIS refused the token: {INVALID}")
        info = reply.get("result")
        name = info.get("userName") if isinstance(info, dict) else None
        if not isinstance(name, str) or not name:
            raise Unauthorized(f"openBIS knows no session for the token: {INVALID}")
        return name

    def close(self) -> None:
        self.client.close()


@register("oidc")
class OidcAuth(AuthBackend):
    """An OpenID Connect issuer: the configured ``claim`` of the userinfo answer is the user.

    Only the configured issuer is asked, whatever the token claims to come from.
    """

    def __init__(self, issuer: str, *, claim: str = "sub", timeout: float = 10.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.claim = claim
        self.timeout = timeout
        self.client = HttpClient(self.issuer, service="OIDC issuer", retry=_policy(timeout),
                                 timeout=(min(5.0, timeout), timeout))

    def user(self, token: str) -> str:
        from nbplugins.tokens import discovery

        try:
            endpoint = discovery(self.issuer, timeout=self.timeout).get("userinfo_endpoint")
            if not isinstance(endpoint, str) or not endpoint:
                raise Upstream(f"{self.issuer} publishes no userinfo endpoint")
            response = self.client.get(endpoint, headers={"Authorization": f"Bearer {token}"}, allow=(400, 401, 403))
        except Upstream:
            raise
        except NbpluginsError as exc:
            raise _upstream("the OIDC issuer", exc) from None
        if response.status_code in (400, 401, 403):  # some issuers answer 400 (invalid_token)
            raise Unauthorized(f"the OIDC issuer refused the token: {INVALID}")
        try:
            info = response.json()
        except ValueError:
            raise Upstream("the OIDC issuer's userinfo answer is not JSON") from None
        name = info.get(self.claim) if isinstance(info, dict) else None
        if not isinstance(name, str) or not name:
            raise Unauthorized(f"the issuer's userinfo for this token has no {self.claim!r} claim to name the user")
        return name

    def close(self) -> None:
        self.client.close()


@register("token-file")
class TokenFileAuth(AuthBackend):
    """A static file of ``token user`` lines (``#`` comments); re-read when it changes."""

    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path)
        self._stamp: tuple[float, int] | None = None
        self._users: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        from nbplugins.files import read_secret_file
        from nbplugins.secrets import register as register_secret

        try:
            info = os.stat(self.path)
        except OSError:
            info = None
        stamp = (info.st_mtime, info.st_size) if info else None
        if stamp is not None and stamp == self._stamp:
            return
        text = read_secret_file(self.path, f"token file {self.path}", error=ConfigError) or ""
        users = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ConfigError(f"token file {self.path}, line {number}: expected 'TOKEN USER'")
            register_secret(fields[0], "serve token file")
            users[_digest(fields[0])] = fields[1]
        self._users, self._stamp = users, stamp

    def user(self, token: str) -> str:
        with self._lock:
            self._load()
            name = self._users.get(_digest(token))
        if name is None:
            raise Unauthorized(f"the token is not in the service's token file: {INVALID}")
        return name


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class CachedAuth:
    """A backend behind a bounded cache of token hash -> (user, expiry); only successes are kept."""

    def __init__(self, backend: AuthBackend, *, ttl: float = 30.0, size: int = 10_000) -> None:
        self.backend = backend
        self.name = backend.name
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.lookups = 0

    def cached(self, token: str) -> str | None:
        """The user of ``token`` if a lookup said so less than ``ttl`` seconds ago (no I/O)."""
        if self.ttl <= 0:
            return None
        key = _digest(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[1] < time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def lookup(self, token: str) -> str:
        """Ask the backend (blocking: run it on a worker thread) and remember a success."""
        self.lookups += 1
        user = self.backend.user(token)
        if self.ttl > 0:
            with self._lock:
                self._entries[_digest(token)] = (user, time.monotonic() + self.ttl)
                self._entries.move_to_end(_digest(token))
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return user

    def close(self) -> None:
        self.backend.close()
