"""A real JupyterHub on 127.0.0.1 for end-to-end link tests.

DummyAuthenticator (any user name and password), SimpleLocalProcessSpawner (homes under a
temp dir, no system users), the pure-Python configurable-http-proxy, and the venv's
``jupyterhub-singleuser`` with nbgitpuller's server extension. Everything the hub writes
(database, cookie secret, pid files, logs) stays in the given state directory; every port
binds 127.0.0.1; the whole process group stops with the fixture.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.servers import harness

CONFIG = """\
# Written by tests/servers/jupyterhub.py: a loopback-only hub for tests.
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = {bind_url!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.JupyterHub.pid_file = {hub_pid!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.log_level = "INFO"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.proxy_class = "configurable-http-proxy"
# The pure-Python proxy buffers each response and gives up on a target after tornado's default
# 20 s: the spawn page's progress stream (open for the whole spawn) and nbgitpuller's pull
# stream would fail on a slow machine and leave the browser waiting forever.
c.ConfigurableHTTPProxy.command = [{proxy!r}, "--proxy-timeout", "{proxy_timeout_ms}"]
c.ConfigurableHTTPProxy.api_url = {proxy_api!r}
c.ConfigurableHTTPProxy.pid_file = {proxy_pid!r}
c.ConfigurableHTTPProxy.debug = False
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = {home_template!r}
c.Spawner.cmd = [{singleuser!r}]
# Tests run as root; the single-user server refuses root without this.
c.Spawner.args = ["--ServerApp.allow_root=True"{extra_args}]
c.Spawner.ip = "127.0.0.1"
c.Spawner.default_url = {default_url!r}
c.Spawner.start_timeout = {start_timeout}
c.Spawner.http_timeout = {start_timeout}
c.Spawner.environment = {environment!r}
# A service with an API token and admin scopes, for the hub API client and the provisioning
# service's hub backend (they act on users' servers and contents).
c.JupyterHub.services = [{{"name": "nbplugins-tests", "api_token": {service_token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "nbplugins-tests",
    "scopes": ["admin:users", "admin:servers", "tokens", "access:servers", "read:users", "list:users"],
    "services": ["nbplugins-tests"],
}}]
"""


def write_config(state: Path, *, port: int, homes: Path, default_url: str = "/lab",
                 extra_args: list[str] | None = None, environment: dict[str, str] | None = None,
                 start_timeout: int = 180, service_token: str = "") -> Path:
    """Write ``jupyterhub_config.py`` into ``state`` (all paths and ports explicit)."""
    state.mkdir(parents=True, exist_ok=True)
    homes.mkdir(parents=True, exist_ok=True)
    text = CONFIG.format(
        bind_url=f"http://{harness.HOST}:{port}/",
        hub_port=harness.free_port(),
        db_url=f"sqlite:///{state / 'jupyterhub.sqlite'}",
        cookie_secret=str(state / "jupyterhub_cookie_secret"),
        hub_pid=str(state / "jupyterhub.pid"),
        proxy=harness.venv_bin("configurable-http-proxy"),
        proxy_timeout_ms=start_timeout * 1000,
        proxy_api=f"http://{harness.HOST}:{harness.free_port()}",
        proxy_pid=str(state / "proxy.pid"),
        home_template=str(homes / "{username}"),
        singleuser=harness.venv_bin("jupyterhub-singleuser"),
        extra_args="".join(f", {a!r}" for a in extra_args or []),
        default_url=default_url,
        start_timeout=start_timeout,
        environment=environment or {},
        service_token=service_token,
    )
    path = state / "jupyterhub_config.py"
    path.write_text(text)
    return path


def nbgitpuller_enabled() -> bool:
    """True when nbgitpuller is installed and enabled as a server extension in this venv.

    Reads the same config files as ``jupyter server extension list`` without importing
    every extension (which takes 10+ s here).
    """
    import importlib.util

    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    if importlib.util.find_spec("nbgitpuller") is None:
        return False
    return bool(ExtensionConfigManager(read_config_path=jupyter_config_path()).enabled("nbgitpuller"))


def start(state: Path, homes: Path, *, log_dir: Path | None = None, timeout: float = 90.0,
          **config: object) -> harness.ServerProcess:
    """Start JupyterHub with its config, state and homes in temp dirs; ready when /hub/health answers."""
    import secrets

    port = harness.free_port()
    service_token = secrets.token_hex(32)
    cfg = write_config(state, port=port, homes=homes, service_token=service_token, **config)  # type: ignore[arg-type]
    url = f"http://{harness.HOST}:{port}/"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}hub/api/", timeout=2) as response:  # noqa: S310
                return "version" in json.loads(response.read())
        except (OSError, ValueError):
            return False

    server = harness.start("jupyterhub", [harness.venv_bin("jupyterhub"), "-f", str(cfg)],
                           port=port, url=url, ready=ready, cwd=state, timeout=timeout,
                           log_dir=log_dir or state)
    server.extra.update(state=state, homes=homes, config=cfg, service_token=service_token)
    return server


def stop(server: harness.ServerProcess) -> None:
    """Stop the hub and, by PID, every process it started (proxy, single-user servers, kernels).

    Single-user servers run in their own sessions, so stopping the hub's process group alone
    could leave them behind if the hub is killed before its own cleanup finishes.
    """
    import contextlib

    import psutil

    try:
        children = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:  # all at once: the hub need not stop each server in turn
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    server.stop()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) from PATH for the browser tests, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def chromium(tmp_path: Path, monkeypatch: Any, window: str = "1280,900") -> Iterator[Any]:
    """Headless Chromium driven by selenium with a fresh profile; skips the test without chromium."""
    import pytest

    paths = chromium_paths()
    if paths is None:
        pytest.skip("chromium and chromium-driver are not installed (make system-deps installs them)")
    # Selenium Manager must neither download drivers nor send usage statistics.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={window}",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=paths[1], log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
