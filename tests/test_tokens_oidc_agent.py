"""oidc-agent for real: Debian's oidc-agent holding an account at the test OIDC provider.

The account is generated non-interactively (``oidc-gen --rt-env`` with a refresh token from
the provider's authorization-code flow, ``--pw-file``, ``--confirm-default``); the agent runs
on the console with its socket in the test's temporary folder and is killed at the end.

The provider gives 30 s tokens for the authorization code but 1 h tokens for refresh grants
(its ``--token-max-age`` covers the code grant only), so "the token expired" is asked of the
agent the way it decides it: a ``min_valid_period`` longer than what its token has left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from nbplugins import files, secrets, tokens
from nbplugins.config import TokenConfig
from nbplugins.errors import TokenError
from tests.servers import oidc

AGENT, GEN = shutil.which("oidc-agent"), shutil.which("oidc-gen")
pytestmark = pytest.mark.skipif(
    not (AGENT and GEN),
    reason="oidc-agent is not installed (Debian: apt-get install oidc-agent-cli, as `make system-deps` does)")

ACCOUNT = "nbp"


@dataclass
class Agent:
    """A running oidc-agent: its socket, the environment that reaches it, and its process."""

    socket: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL (a frozen agent too) and reap it: the socket file stays, as after a crash."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_agent(base: Path, env: dict[str, str], name: str = "agent") -> Agent:
    """``oidc-agent --console`` with its socket at ``base/NAME.sock``, waited for until it listens."""
    sock = base / f"{name}.sock"
    log = base / f"{name}.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen([AGENT, "--console", "--no-autoload", f"--socket-path={sock}", "--log-stderr"],
                                env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    agent = Agent(sock, {**env, "OIDC_SOCK": str(sock)}, proc, log)
    deadline = time.monotonic() + 15
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            agent.kill()
            raise RuntimeError(f"oidc-agent did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return agent


@pytest.fixture
def agent(oidc_provider, tmp_path_factory, monkeypatch) -> Iterator[Agent]:
    """An agent holding account ``nbp`` of a fresh user at the provider; OIDC_SOCK points to it."""
    base = tmp_path_factory.mktemp("oa")  # short: a UNIX socket path must fit in 108 bytes
    os.chmod(base, 0o700)
    env = {**os.environ, "TMPDIR": str(base), "LANG": "C"}  # HOME is the test's (conftest.isolated)
    running = start_agent(base, env)
    try:
        client_id, client_secret = oidc.register_client(oidc_provider.url)
        response = oidc.login(oidc_provider.url, f"agent-{uuid.uuid4().hex[:8]}@egi.eu", client_id, client_secret)
        password = base / "pw"
        files.write_atomic(password, f"pw-{uuid.uuid4().hex}\n")
        gen = subprocess.run(
            [GEN, ACCOUNT, f"--iss={oidc_provider.url}", f"--client-id={client_id}",
             f"--client-secret={client_secret}", "--rt-env=NBP_REFRESH_TOKEN", "--scope=openid offline_access",
             f"--pw-file={password}", "--confirm-default", "--no-url-call", "--prompt=none"],
            env={**running.env, "NBP_REFRESH_TOKEN": response["refresh_token"]}, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=60)
        assert gen.returncode == 0, f"oidc-gen failed: {gen.stdout}\n{gen.stderr}\n{running.log.read_text()[-2000:]}"
        monkeypatch.setenv("OIDC_SOCK", str(running.socket))
        yield running
    finally:
        running.kill()


def resolver(provider_url: str, margin: float = 60.0) -> tokens.TokenResolver:
    return tokens.TokenResolver(TokenConfig(oidc_agent_account=ACCOUNT, issuer=provider_url,
                                            refresh_margin=margin), source="oidc-agent")


def accepted(provider_url: str, value: str) -> bool:
    """Whether the provider accepts the access token (its userinfo endpoint answers 200)."""
    answer = requests.get(f"{provider_url}/userinfo", headers={"Authorization": f"Bearer {value}"}, timeout=10)
    return answer.status_code == 200


def test_the_agent_gives_a_valid_token_with_its_expiry_registered_with_the_scrubber(agent, oidc_provider):
    token = resolver(oidc_provider.url).get()
    assert token.source == f"oidc-agent account {ACCOUNT!r}"
    assert accepted(oidc_provider.url, token.value)
    assert token.expires_at is not None and 60 < token.seconds_left() <= 3600  # the agent's expires_at
    assert secrets.redact(f"Bearer {token.value}") == "Bearer ***"
    assert token.value not in repr(token) and token.value not in str(token)


def test_the_agent_keeps_a_token_while_valid_and_refreshes_it_when_asked_or_near_expiry(agent, oidc_provider):
    first = resolver(oidc_provider.url).get()
    assert resolver(oidc_provider.url).get().value == first.value  # valid long enough: the agent's cached one
    forced = resolver(oidc_provider.url).get(force_refresh=True)  # what a 401 does
    assert forced.value != first.value
    assert accepted(oidc_provider.url, forced.value)
    # near expiry: the margin is longer than the token has left, so the agent refreshes it
    near = resolver(oidc_provider.url, margin=3601).get()
    assert near.value != forced.value and accepted(oidc_provider.url, near.value)
    assert secrets.redact(" ".join((first.value, forced.value, near.value))) == "*** *** ***"


def test_an_agent_dying_during_a_request_gives_one_clear_error_line(agent, oidc_provider):
    token = resolver(oidc_provider.url).get()
    agent.signal(signal.SIGSTOP)  # frozen: the kernel still accepts the connection, nobody answers
    box: dict = {}

    def fetch() -> None:
        try:
            resolver(oidc_provider.url).get()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # the request is in the agent's hands
    agent.kill()  # and the agent dies holding it
    thread.join(10)
    assert not thread.is_alive()
    error = box.get("error")
    assert isinstance(error, TokenError), error
    message = str(error)
    assert "\n" not in message and token.value not in message
    assert message.startswith(f"oidc-agent account {ACCOUNT!r}: the agent stopped answering (")
    assert f"oidc-add {ACCOUNT}" in message


def test_an_agent_gone_mid_run_gives_one_clear_error_line(agent, oidc_provider):
    token = resolver(oidc_provider.url).get()
    agent.kill()  # killed: the socket file stays and nothing answers on it
    for force in (False, True):
        with pytest.raises(TokenError) as info:
            resolver(oidc_provider.url).get(force_refresh=force)
        message = str(info.value)
        assert "\n" not in message and token.value not in message
        assert message.startswith(f"oidc-agent account {ACCOUNT!r}: ")
        assert "Could not connect to oidc-agent" in message and f"oidc-add {ACCOUNT}" in message
    # a new agent on the same socket, without the account (a restart): still one line that says so
    agent.socket.unlink(missing_ok=True)
    base = agent.socket.parent
    restarted = start_agent(base, {k: v for k, v in agent.env.items() if k != "OIDC_SOCK"}, name="agent")
    try:
        with pytest.raises(TokenError) as info:
            resolver(oidc_provider.url).get()
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"oidc-agent account {ACCOUNT!r}: ")
        assert "not loaded" in message.lower() or "no account" in message.lower(), message
        assert f"oidc-add {ACCOUNT}" in message
    finally:
        restarted.kill()
