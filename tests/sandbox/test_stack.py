"""The sandbox library: the profile it writes, faithful services, sample data, ports, failures, diagnosis."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pytest

from nbplugins import config
from nbplugins.sandbox import diagnose, registry, services, stack
from nbplugins.sandbox.registry import Service, Tool
from nbplugins.sandbox.state import SandboxError
from tests.sandbox.helpers import none_alive, read_state, recorded_pids

STORAGE = ["oidc", "s3", "onedata"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """Every service, started in this process (they die with it), stopped at the end."""
    box = stack.up(tmp_path_factory.mktemp("sandbox") / "sb", STORAGE)  # the compute services: test_compute_services
    yield box
    box.stop()


def test_the_config_is_the_sandbox_profile(sandbox):
    cfg = config.load(sandbox.config_file, environ={})
    assert cfg.storage.profile == "sandbox"
    assert cfg.s3["sandbox"].endpoint_url == sandbox.started["s3"].server.url
    assert cfg.s3["sandbox"].credentials == "static"
    assert cfg.token.source == "refresh" and cfg.token.issuer == sandbox.started["oidc"].server.url
    assert cfg.onedata.provider == sandbox.started["onedata"].server.url
    assert Path(cfg.onedata.verify).is_file()
    assert sandbox.config_file.stat().st_mode & 0o777 == 0o600


def test_each_service_is_faithful_to_its_official_client(sandbox):
    results = stack.check(sandbox.dir)
    assert {name for name, _, _ in results} == set(STORAGE)
    assert all(ok for _, ok, _ in results), results


def test_the_sample_data_is_in_s3_and_onedata_through_the_storage_layer(sandbox, monkeypatch):
    from nbplugins.storage import filesystem

    monkeypatch.setenv("NBPLUGINS_CONFIG", str(sandbox.config_file))
    for name in services.SAMPLES:
        expected = (ROOT / "templates" / "data" / name).read_bytes()
        for url in (f"s3://sandbox/data/{name}", f"onedata://sandbox/data/{name}"):
            fs, path = filesystem(url)
            assert fs.cat_file(path) == expected, url


def test_status_checks_each_pid(sandbox):
    current = stack.status(sandbox.dir)
    assert current["status"] == "running"
    assert all(entry["alive"] for entry in current["services"].values())


def test_diagnose_stays_quiet_for_a_running_sandbox_and_other_hosts(sandbox, monkeypatch):
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(sandbox.config_file))
    url = sandbox.started["s3"].server.url
    assert diagnose(url) is None
    assert diagnose(url.replace("127.0.0.1", "example.org")) is None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert diagnose(f"http://127.0.0.1:{sock.getsockname()[1]}") is None


def test_diagnose_names_the_profile_and_the_command_once_the_sandbox_is_down(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    from nbplugins.sandbox import default_dir

    box = stack.up(default_dir(), ["s3"])
    url = box.started["s3"].server.url
    box.stop()
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(box.config_file))
    line = diagnose(f"{url}/sandbox/data?list-type=2")
    assert line is not None and "\n" not in line
    assert "'sandbox' profile" in line and str(box.config_file) in line
    assert line.endswith("`nbplugins sandbox up`")  # the default folder needs no --dir


def test_a_port_taken_meanwhile_is_not_a_failure(tmp_path, monkeypatch):
    registry.names()
    grabbed: list[socket.socket] = []

    def grab_then_start(ctx, port):
        if not grabbed:  # someone takes the port between its choice and the server's bind
            squatter = socket.socket()
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            grabbed.append(squatter)
        return services.start_s3(ctx, port)

    monkeypatch.setitem(registry.SERVICES, "grabby", Service("grabby", "s3 on a contested port", grab_then_start))
    lines: list[str] = []
    box = stack.up(tmp_path / "sb", ["grabby"], echo=lines.append)
    try:
        taken = grabbed[0].getsockname()[1]
        assert box.started["grabby"].server.port != taken
        assert any(f"port {taken} was taken" in line for line in lines)
    finally:
        box.stop()
        grabbed[0].close()


def test_a_failed_service_stops_the_ones_started_before_it(tmp_path, monkeypatch):
    registry.names()

    def broken(ctx, port):
        raise RuntimeError("broken exited with 1 before it answered:\nno such thing")

    monkeypatch.setitem(registry.SERVICES, "broken", Service("broken", "always fails", broken))
    with pytest.raises(SandboxError, match="the sandbox's broken server did not start: broken exited .* no such thing"):
        stack.up(tmp_path / "sb", ["s3", "broken"])
    state = read_state(tmp_path / "sb")
    assert state["status"] == "failed" and list(state["services"]) == ["s3"]
    assert none_alive(recorded_pids(state))
    assert not (tmp_path / "sb" / "config.toml").exists()


def test_a_missing_tool_names_the_command_that_installs_it(tmp_path, monkeypatch):
    registry.names()
    needy = Service("needy", "needs a tool", services.start_s3,
                    tools=(Tool("nbplugins-no-such-tool", "no-such-package"),))
    monkeypatch.setitem(registry.SERVICES, "needy", needy)
    with pytest.raises(SandboxError) as missing:
        stack.up(tmp_path / "sb", ["s3", "needy"])
    assert "no-such-package" in str(missing.value) and "pip install 'nbplugins[sandbox]'" in str(missing.value)
    assert not (tmp_path / "sb").exists()


def test_the_config_text_survives_any_characters(tmp_path):
    from nbplugins.sandbox.registry import Started

    odd = 'quote " backslash \\ tab \t newline \n unicode é ☃'
    fake = Started(server=None, settings={"s3.x": {"endpoint_url": odd, "verify": False, "concurrency": 3}})  # type: ignore[arg-type]
    parsed = tomllib.loads(stack.config_text({"x": fake}))
    assert parsed["s3"]["x"] == {"endpoint_url": odd, "verify": False, "concurrency": 3}
