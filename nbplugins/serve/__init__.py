"""The provisioning service (``nbplugins serve``): notebooks created in users' homes from an ELN link.

openBIS's ELN (and other portals) call it to put a notebook into a user's JupyterHub home;
it keeps the protocol of jupyter-openbis-integration-service and none of its holes:

* :mod:`~nbplugins.serve.app`: the tornado application (protocol, CORS, limits, access log);
* :mod:`~nbplugins.serve.auth`: who a token belongs to (openBIS, OIDC, token file), cached;
* :mod:`~nbplugins.serve.homes`: local homes, written as the user without following links;
* :mod:`~nbplugins.serve.hubapi`: homes behind a JupyterHub, through the user's server;
* :mod:`~nbplugins.serve.names`: the folder and file name rules, the unique-name rule;
* :mod:`~nbplugins.serve.templates`: notebooks made from parameterized templates.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys
from dataclasses import dataclass
from typing import Any

from nbplugins.errors import ConfigError


@dataclass
class Options:
    """Everything ``nbplugins serve`` is started with (the CLI fills it in)."""

    port: int = 8123
    bind: str = "127.0.0.1"
    cert: str | None = None
    key: str | None = None
    base_path: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body: int = 10 * 2**20
    homes: str | None = None
    hub_api: str | None = None
    hub_api_token: str | None = None
    openbis: str | None = None
    oidc_issuer: str | None = None
    oidc_claim: str = "sub"
    token_file: str | None = None
    templates: str | None = None
    hub_url: str | None = None
    auth_ttl: float = 30.0
    auth_timeout: float = 10.0


def build(options: Options) -> Any:
    """The :class:`~nbplugins.serve.app.Service` for ``options``: one home writer, one auth backend."""
    from nbplugins import config
    from nbplugins.serve import auth, templates
    from nbplugins.serve.app import Service

    if (options.homes is None) == (options.hub_api is None):
        raise ConfigError("give exactly one home backend: --homes '/home/{user}' or --hub-api URL")
    chosen = [name for name, value in (("openbis", options.openbis), ("oidc", options.oidc_issuer),
                                       ("token-file", options.token_file)) if value]
    if len(chosen) != 1:
        raise ConfigError("give exactly one auth backend: --openbis URL, --oidc-issuer URL or --token-file PATH")
    if options.homes is not None:
        from nbplugins.serve.homes import LocalHomes

        homes = LocalHomes(options.homes)
    else:
        from nbplugins.serve.hubapi import HubHomes

        homes = HubHomes(options.hub_api, options.hub_api_token or config.get().serve.hub_api_token)
    backend = {
        "openbis": lambda: auth.create("openbis", url=options.openbis, timeout=options.auth_timeout),
        "oidc": lambda: auth.create("oidc", issuer=options.oidc_issuer, claim=options.oidc_claim,
                                    timeout=options.auth_timeout),
        "token-file": lambda: auth.create("token-file", path=options.token_file),
    }[chosen[0]]()
    hub_url = (options.hub_url or options.hub_api or "").rstrip("/") or None
    return Service(auth=auth.CachedAuth(backend, ttl=options.auth_ttl),
                   homes=homes, templates=templates.Templates(templates.folders(options.templates)),
                   max_body=options.max_body, cors_origins=frozenset(options.cors_origins), hub_url=hub_url)


def _configure_logging() -> None:
    """Access lines (JSON) to stderr at INFO whatever the CLI's level; tornado's own at WARNING."""
    access = logging.getLogger("nbplugins.serve.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


def run(options: Options, ready: Any = None) -> None:
    """Serve until SIGINT or SIGTERM; ``ready(port)`` is called once the socket listens."""
    import tornado.httpserver
    import tornado.ioloop

    from nbplugins.serve.app import make_app

    service = build(options)
    app = make_app(service, options.base_path)
    tls = None
    if options.cert or options.key:
        if not (options.cert and options.key):
            raise ConfigError("give both --cert and --key for TLS")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(options.cert, options.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--cert/--key: cannot load the certificate ({exc.__class__.__name__})") from None
    _configure_logging()
    server = tornado.httpserver.HTTPServer(app, ssl_options=tls, max_body_size=options.max_body,
                                           idle_connection_timeout=60, body_timeout=60)
    try:
        server.listen(options.port, address=options.bind)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {options.bind}:{options.port}: {exc.strerror or exc}") from None
    loop = tornado.ioloop.IOLoop.current()

    def stop(signum: int, frame: Any) -> None:
        loop.asyncio_loop.call_soon_threadsafe(loop.stop)  # type: ignore[attr-defined]

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    logging.getLogger("nbplugins.serve").warning(
        "serving on %s://%s:%d (homes: %s, auth: %s, pid %d)", "https" if tls else "http", options.bind,
        options.port, service.homes.name, service.auth.name, os.getpid())
    if ready is not None:
        ready(options.port)
    try:
        loop.start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
        service.close()
