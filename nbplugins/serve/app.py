"""The provisioning service's web face: the openBIS ELN protocol on tornado, safe by construction.

``POST <base>?token=...&folder=...&filename=NAME.ipynb&test=True|False`` at ``/``,
``/jupyter-openbis-integration-service`` (where the ELN's documented reverse proxies send it)
and ``--base-path``. ``test`` absent or ``False`` creates the notebook from the body; any
other value is a dry run that writes nothing. Both answer ``{"fileName", "path"}``;
``template=NAME`` (with ``p.NAME=VALUE`` or a JSON body) makes the notebook from a template
and adds ``url``. Arguments are read from the query string only. Every error is a JSON
``{"message"}`` with its status (400, 401, 404, 409, 413, 5xx); the token is never in an
answer or a log line. ``GET <base>/health`` answers ``{"status": "ok"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import tornado.web

from nbplugins.errors import NbpluginsError
from nbplugins.serve import names
from nbplugins.serve.auth import CachedAuth
from nbplugins.serve.base import BadRequest, Forbidden, HomesBackend, ServeError, TooLarge, Upstream
from nbplugins.serve.templates import Templates, check_name

ELN_PATH = "/jupyter-openbis-integration-service"
DEFAULT_MAX_BODY = 10 * 2**20
#: Bodies above --max-body but below this are read and dropped so the client reads its 413;
#: bigger ones are answered at once and the connection is closed.
DISCARD_MAX = 256 * 2**20

access_log = logging.getLogger("nbplugins.serve.access")
log = logging.getLogger("nbplugins.serve")


@dataclass
class Service:
    """What the handlers share: the auth cache, the home writer, templates, limits and a worker pool."""

    auth: CachedAuth
    homes: HomesBackend
    templates: Templates
    max_body: int = DEFAULT_MAX_BODY
    cors_origins: frozenset[str] = frozenset()
    hub_url: str | None = None
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(16, thread_name_prefix="nbp-serve"))

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (a lookup, a write) on the worker pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.auth.close()
        self.homes.close()


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


class JsonHandler(tornado.web.RequestHandler):
    """JSON answers, CORS for the configured origins only, errors as ``{"message"}``."""

    action = "other"

    def initialize(self, service: Service) -> None:
        self.service = service
        self.user: str | None = None
        self.result: str | None = None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.clear_header("Server")

    def allowed_origin(self) -> str | None:
        origin = self.request.headers.get("Origin")
        return origin if origin and origin in self.service.cors_origins else None

    def prepare(self) -> None:
        origin = self.allowed_origin()
        if origin:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")

    def answer(self, status: int, body: dict[str, Any]) -> None:
        if self._finished:
            return
        self.set_status(status)
        self.finish(json.dumps(body))

    def fail(self, error: ServeError) -> None:
        self.result = str(error)
        self.answer(error.status, {"message": str(error)})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.result = self._reason
        self.finish(json.dumps({"message": self._reason if status_code < 500 else "internal error"}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Log a failure without the request line (tornado's default logs the URI, token included)."""
        if isinstance(value, tornado.web.HTTPError):
            return
        log.error("%s %s failed: %s", self.request.method, self.request.path, typ.__name__, exc_info=(typ, value, tb))

    def options(self, *args: Any) -> None:
        self.action = "preflight"
        if not self.allowed_origin():
            self.fail(Forbidden("cross-origin requests are not allowed from this origin"))
            return
        self.set_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Content-Type, X-Requested-With")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()


class NotFoundHandler(JsonHandler):
    """Anything not served: a JSON 404."""

    def prepare(self) -> None:
        super().prepare()
        self.answer(404, {"message": f"nothing is served at {self.request.path[:100]}; POST to the service's base path"})


class HealthHandler(JsonHandler):
    """``GET /health``: the service is up, which backends it uses."""

    action = "health"

    def get(self) -> None:
        self.answer(200, {"status": "ok", "homes": self.service.homes.name, "auth": self.service.auth.name})


@tornado.web.stream_request_body
class NotebookHandler(JsonHandler):
    """The ELN endpoint: dry runs and creates, from a body or a template."""

    action = "create"

    def prepare(self) -> None:
        super().prepare()
        self.body = bytearray()
        self.received = 0
        if self.request.method != "POST":
            return
        declared = self.request.headers.get("Content-Length")
        length = int(declared) if declared and declared.isdigit() else 0
        if length > DISCARD_MAX:  # answered now; the connection closes once the answer is out
            self.request.connection.set_max_body_size(length)
            self.fail(TooLarge(f"the body is {_size(length)}; at most {_size(self.service.max_body)} is accepted"))
            return
        self.request.connection.set_max_body_size(DISCARD_MAX)  # the limit itself is checked here, as a 413

    def data_received(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received <= self.service.max_body:
            self.body += chunk

    def get(self, *args: Any) -> None:
        self.fail(BadRequest("POST the notebook with the arguments token, folder, filename (and test)"))

    def query(self) -> dict[str, str]:
        """The query arguments (never the body's), UTF-8, each given at most once."""
        args: dict[str, str] = {}
        for key, values in self.request.query_arguments.items():
            if len(values) > 1:
                raise BadRequest(f"argument {key[:40]!r} is given more than once")
            try:
                args[key] = values[0].decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"argument {key[:40]!r} is not UTF-8 text") from None
        return args

    async def post(self, *args: Any) -> None:
        try:
            await self._post()
        except ServeError as exc:
            self.fail(exc)
        except NbpluginsError as exc:
            self.fail(Upstream(str(exc)))

    async def _post(self) -> None:
        service = self.service
        if self.received > service.max_body:
            raise TooLarge(f"the body is {_size(self.received)}; at most {_size(service.max_body)} is accepted")
        args = self.query()
        template = args.get("template")
        missing = [k for k in ("token", "folder", "filename") if k not in args and not (template and k != "token")]
        if missing:
            raise BadRequest(f"missing argument{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
                             "(POST ?token=...&folder=...&filename=NAME.ipynb&test=True|False)")
        test = args.get("test")
        dry = test is not None and test != "False"
        self.action = ("template " if template else "") + ("dry-run" if dry else "create")
        if template:
            check_name(template)
        folder = names.folder_parts(args.get("folder", ""))
        filename = names.check_filename(args.get("filename") or f"{template}{names.SUFFIX}")
        token = args["token"]
        if not token:
            raise BadRequest("missing argument: token is empty")
        self.user = service.auth.cached(token) or await service.run(service.auth.lookup, token)
        body = bytes(self.body)
        content: bytes | None = None
        if template:
            params = {k[2:]: v for k, v in args.items() if k.startswith("p.") and len(k) > 2}
            content = await service.run(service.templates.render, template, params, body)
        elif not dry:
            content = await service.run(read_notebook, body)
        if dry and service.homes.inline_dry_run:
            placed = service.homes.place(self.user, folder, filename, None)
        else:
            placed = await service.run(service.homes.place, self.user, folder, filename, None if dry else content)
        answer = {"fileName": placed.filename, "path": placed.path}
        if template and service.hub_url:
            answer["url"] = f"{service.hub_url}/hub/user-redirect/lab/tree/{urllib.parse.quote(placed.relative)}"
        self.result = placed.filename
        self.answer(200, answer)


def read_notebook(body: bytes) -> bytes:
    """``body`` if it is a valid Jupyter notebook (JSON, nbformat schema); 400 saying why not."""
    import nbformat

    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text; send the notebook's JSON") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON ({getattr(exc, 'msg', 'malformed')}); send the notebook's JSON") from None
    if not isinstance(data, dict) or "cells" not in data or "nbformat" not in data:
        raise BadRequest("the body is JSON but not a Jupyter notebook (no 'cells' or 'nbformat')")
    try:
        nbformat.validate(nbformat.from_dict(data))
    except Exception as exc:  # noqa: BLE001 - nbformat raises several types for a bad notebook
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BadRequest(f"the body is not a valid Jupyter notebook: {reason}") from None
    return body


_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s'\"]+", re.IGNORECASE)


class _NoTokens(logging.Filter):
    """Masks ``token=...`` in any tornado log line: a second guard behind handlers that never log it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message.lower():
            record.msg, record.args = _TOKEN_IN_TEXT.sub(r"\1***", message), None
        return True


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """One JSON line per request: who, what, the outcome, how long; never the query string."""
    access_log.info(json.dumps({
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "remote": handler.request.remote_ip,
        "method": handler.request.method,
        "path": handler.request.path,
        "status": handler.get_status(),
        "user": getattr(handler, "user", None),
        "action": getattr(handler, "action", "other"),
        "result": getattr(handler, "result", None),
        "ms": round(handler.request.request_time() * 1000, 2),
    }))


def base_paths(base_path: str | None) -> list[str]:
    """Where the service answers: ``/``, the ELN's proxy path and ``--base-path``."""
    paths = ["", ELN_PATH]
    if base_path:
        cleaned = "/" + base_path.strip("/")
        if cleaned != "/" and cleaned not in paths:
            paths.append(cleaned)
    return paths


def make_app(service: Service, base_path: str | None = None) -> tornado.web.Application:
    """The tornado application: the ELN endpoint and ``/health`` under every base path."""
    routes: list[Any] = []
    for base in base_paths(base_path):
        prefix = re.escape(base)
        routes += [(rf"{prefix}/health", HealthHandler, {"service": service}),
                   (rf"{prefix}/?", NotebookHandler, {"service": service})]
    for name in ("tornado.access", "tornado.application", "tornado.general"):
        logging.getLogger(name).addFilter(_NoTokens())
    return tornado.web.Application(routes, default_handler_class=NotFoundHandler,
                                   default_handler_args={"service": service}, log_function=_log_request,
                                   compress_response=False)
