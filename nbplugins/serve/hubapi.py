"""JupyterHub API homes: notebooks written through the user's own server (contents API).

For hubs whose homes live in pods or volumes this host cannot reach. The user must exist on
the hub (404 otherwise); a stopped server is started through the hub API
(``POST /hub/api/users/<name>/server``) and waited for with :func:`nbplugins.retry.poll`.
The contents API has no create-if-absent, so the notebook is first saved under a unique
temporary name and then renamed to the first free name: Jupyter refuses a rename onto an
existing file (409), so nothing is overwritten, and creates for one user are serialized
here so two of ours cannot race for one name. The service token comes from
``[serve] hub_api_token`` (``NBPLUGINS_HUB_API_TOKEN`` / ``JUPYTERHUB_API_TOKEN``), never
from the command line.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import uuid
from typing import Any

from nbplugins import secrets
from nbplugins.errors import ConfigError, NbpluginsError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry, poll
from nbplugins.serve import names
from nbplugins.serve.base import (
    BadRequest,
    Conflict,
    HomesBackend,
    NotFound,
    Placed,
    ServeError,
    Upstream,
)
from nbplugins.tokens import StaticToken


def _quote(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


class HubHomes(HomesBackend):
    """Homes behind a JupyterHub, written through each user's server."""

    name = "JupyterHub API"

    def __init__(self, hub_url: str, token: str | None, *, spawn_timeout: float = 300.0,
                 timeout: float = 30.0, verify: bool | str = True) -> None:
        if not token:
            raise ConfigError("the hub backend needs a service token: set NBPLUGINS_HUB_API_TOKEN (or "
                              "JUPYTERHUB_API_TOKEN, or [serve] hub_api_token in the config file)")
        secrets.register(token, "hub API token")
        self.hub_url = hub_url.rstrip("/")
        self.spawn_timeout = spawn_timeout
        self.client = HttpClient(self.hub_url, service="JupyterHub", token=StaticToken(token, "hub API token"),
                                 scheme="token ", retry=Retry(deadline=timeout, initial=0.3, cap=3.0, error_budget=4),
                                 timeout=(5.0, timeout), verify=verify)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # --- the hub

    def _model(self, user: str) -> dict[str, Any]:
        response = self.client.get(f"hub/api/users/{_quote(user)}", allow=(404,))
        if response.status_code == 404:
            raise NotFound(f"user {user} does not exist on the hub; they must log in to the hub once")
        return response.json()

    @staticmethod
    def _ready(model: dict[str, Any]) -> bool:
        server = (model.get("servers") or {}).get("")
        if isinstance(server, dict):
            return bool(server.get("ready"))
        return bool(model.get("server")) and not model.get("pending")

    def ensure_running(self, user: str) -> None:
        """Start the user's default server unless it runs, and wait until it is ready."""
        model = self._model(user)
        if self._ready(model):
            return
        if not model.get("pending"):
            response = self.client.post(f"hub/api/users/{_quote(user)}/server", allow=(400,))
            if response.status_code == 400 and "pending" not in response.text and "running" not in response.text:
                raise Upstream(f"the hub would not start the server of {user}")
        poll(lambda: self._model(user), self._ready, what=f"the hub server of {user}", interval=0.5,
             max_interval=2.0, deadline=self.spawn_timeout)

    # --- the user's server

    def _contents(self, user: str, path: str) -> str:
        return f"user/{_quote(user)}/api/contents/{_quote(path)}"

    def _kind(self, user: str, path: str) -> str | None:
        """``"directory"``, ``"notebook"``, ``"file"``, or None when nothing is there."""
        response = self.client.get(self._contents(user, path), params={"content": "0"}, allow=(404,))
        return None if response.status_code == 404 else response.json().get("type")

    def _folder(self, user: str, parts: tuple[str, ...], create: bool) -> bool:
        """Whether ``parts`` exists as folders (made when ``create``); a file on the way is refused."""
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            kind = self._kind(user, path)
            if kind is None:
                if not create:
                    return False
                self.client.put(self._contents(user, path), json={"type": "directory"}, allow=(409,))
            elif kind != "directory":
                raise BadRequest(f"folder {path} is a file, not a folder")
        return True

    def _lock(self, user: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(user, threading.Lock())

    def place(self, user: str, folder: tuple[str, ...], filename: str, content: bytes | None) -> Placed:
        """Dry run or create through the contents API of the user's server (started if needed)."""
        names.check_user(user)
        try:
            self.ensure_running(user)
            with self._lock(user):
                name = self._place(user, folder, filename, content)
        except ServeError:
            raise
        except NbpluginsError as exc:
            raise Upstream(f"the hub failed: {exc}") from None
        relative = names.relative_path(folder, name)
        return Placed(name, relative, relative)

    def _place(self, user: str, folder: tuple[str, ...], filename: str, content: bytes | None) -> str:
        if content is None:
            if not self._folder(user, folder, create=False):
                return filename
            for name in names.candidates(filename):
                if self._kind(user, names.relative_path(folder, name)) is None:
                    return name
            raise Conflict(f"{filename} and {names.TRIES - 1} numbered names are all taken")
        self._folder(user, folder, create=True)
        stem = filename[: -len(names.SUFFIX)][:200]
        temporary = names.relative_path(folder, f"{stem}.nbp-{uuid.uuid4().hex[:12]}{names.SUFFIX}")
        self.client.put(self._contents(user, temporary),
                        json={"type": "notebook", "format": "json", "content": json.loads(content)})
        try:
            for name in names.candidates(filename):
                target = names.relative_path(folder, name)
                response = self.client.request("PATCH", self._contents(user, temporary), json={"path": target},
                                               allow=(409,))
                if response.status_code != 409:
                    temporary = ""
                    return name
            raise Conflict(f"{filename} and {names.TRIES - 1} numbered names are all taken")
        finally:
            if temporary:
                self.client.delete(self._contents(user, temporary), allow=(404,))

    def close(self) -> None:
        self.client.close()
