"""Starting and stopping servers by PID: detached servers outlive their parent; a reused PID is left alone."""

from __future__ import annotations

import subprocess
import sys
import time

from nbplugins.sandbox import harness

SLEEPER = [sys.executable, "-c", "import time, socket, sys\n"
           "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(600)", "{port}"]


def test_stop_pid_leaves_a_different_process_under_the_same_pid_alone(tmp_path):
    server = harness.start("sleeper", SLEEPER, log_dir=tmp_path)
    try:
        assert harness.alive(server.pid, server.ticks)
        assert harness.stop_pid(server.pid, server.ticks + 1) is False  # another start time: not ours
        assert harness.alive(server.pid)
        assert harness.stop_pid(server.pid, server.ticks) is True
        assert not harness.alive(server.pid) and not harness.group_members(server.pid)
    finally:
        server.stop()


def test_a_detached_server_outlives_its_parent_and_stops_by_pid(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from nbplugins.sandbox import harness\n"
            f"s = harness.start('sleeper', {SLEEPER!r}, log_dir=sys.argv[2], detach=bool(int(sys.argv[3])))\n"
            "print(s.pid, s.ticks, flush=True)")
    found = {}
    for detach in (0, 1):
        out = subprocess.run([sys.executable, "-c", code, ".", str(tmp_path), str(detach)], capture_output=True,
                             text=True, check=True, timeout=60).stdout.split()
        found[detach] = int(out[0]), int(out[1])
    try:
        deadline = time.monotonic() + 10
        while harness.alive(*found[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not harness.alive(*found[0])  # died with its parent
        assert harness.alive(*found[1])  # detached: still running
        assert harness.stop_pid(*found[1])
        assert not harness.alive(*found[1])
    finally:
        for pid, ticks in found.values():
            harness.stop_pid(pid, ticks, timeout=1)


def test_port_free_sees_a_listening_socket(tmp_path):
    with harness.running("sleeper", SLEEPER, log_dir=tmp_path) as server:
        assert not harness.port_free(server.port)
    assert server.log_path.stat().st_mode & 0o777 == 0o600
