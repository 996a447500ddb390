"""The attack corpus, over real HTTP: traversal (plain and encoded), absolute folders, links
planted in the home, NUL bytes, overlong names, huge and malformed bodies, racing creates.
After each: nothing written outside the home, nothing overwritten, every created path owned
by the user, and no token in any answer or log line. Each bug of jupyter-openbis-integration-service
0.2.12 listed in the issue has a test here or in test_app.py (named for it)."""

from __future__ import annotations

import os
import socket
import stat
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.serve.conftest import IS_ROOT, log_lines, notebook, owned_by, snapshot


@pytest.fixture
def base(stack):
    """What a request could change: the homes and the folder beside them."""
    return stack


def world(stack) -> tuple[dict, dict]:
    return snapshot(stack.homes), snapshot(stack.outside)


def raw_post(stack, query: str, body: str = "TEST") -> requests.Response:
    """POST with a query string sent exactly as written (no re-encoding)."""
    token = urllib.parse.quote(stack.token(), safe="")
    return requests.post(f"{stack.url}/?token={token}&{query}", data=body, timeout=30)


REFUSED = [
    ("../x", "x.ipynb"), ("../../outside", "x.ipynb"), ("a/../../..", "x.ipynb"), ("..", "x.ipynb"),
    ("", "../x.ipynb"), ("", "../../outside/x.ipynb"), ("a", "b/../../x.ipynb"),
    ("/etc", "x.ipynb"), ("/tmp", "x.ipynb"), ("//outside", "x.ipynb"), ("\\\\host\\share", "x.ipynb"),
    ("..\\..\\outside", "x.ipynb"), ("a\x00b", "x.ipynb"), ("a", "x\x00.ipynb"), ("a\nb", "x.ipynb"),
    (".ssh", "x.ipynb"), (".ipython/profile_default/startup", "x.ipynb"), (".jupyter", "x.ipynb"),
    ("", ".bashrc"), ("", "authorized_keys"), ("", "x.py"), ("", ".x.ipynb"),
    ("", "n" * 300 + ".ipynb"), ("d" * 300, "x.ipynb"), ("/".join(["d"] * 50), "x.ipynb"),
]


@pytest.mark.parametrize("folder, filename", REFUSED)
@pytest.mark.parametrize("test", ["True", "False"])
def test_traversal_absolute_hidden_nul_and_overlong_names_are_400_and_change_nothing(stack, base, folder,
                                                                                    filename, test):
    """The old service joined folder and filename onto the home: '..' or '/etc' escaped it."""
    before = world(base)
    answer = stack.post(notebook(), folder=folder, filename=filename, test=test)
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"]
    assert world(base) == before


@pytest.mark.parametrize("query", [
    "folder=%2e%2e%2f%2e%2e%2foutside&filename=x.ipynb",
    "folder=..%2f..%2foutside&filename=x.ipynb",
    "folder=%2Fetc&filename=x.ipynb",
    "folder=a&filename=%2e%2e%2fx.ipynb",
    "folder=a&filename=..%5cx.ipynb",
    "folder=a%00b&filename=x.ipynb",
    "folder=a&filename=x.ipynb%00.txt",
    "folder=%c0%ae%c0%ae%2f&filename=x.ipynb",
    "folder=a&filename=x.ipynb&folder=..",
])
def test_encoded_traversal_is_400_and_changes_nothing(stack, base, query):
    before = world(base)
    answer = raw_post(stack, f"{query}&test=False", notebook())
    assert answer.status_code == 400, answer.text
    assert world(base) == before


def test_double_encoded_dots_are_only_a_strange_name_inside_the_home(stack, base):
    outside = snapshot(stack.outside)
    answer = raw_post(stack, "folder=%252e%252e%252f&filename=x.ipynb&test=False", notebook())
    assert answer.status_code == 200
    assert answer.json()["path"] == str(stack.home() / "%2e%2e%2f" / "x.ipynb")
    assert snapshot(stack.outside) == outside


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-folder", "dangling"])
def test_a_symlinked_folder_in_the_home_is_refused_and_its_target_not_chowned_or_chmodded(stack, base, dangling):
    """The old service chowned a symlinked folder's target to the user and set it 0755."""
    target = stack.outside / f"secret-dir-{dangling}"
    if not dangling:
        target.mkdir(mode=0o700)
        (target / "keep").write_text("root's")
    link = stack.home() / f"linked-{dangling}"
    link.symlink_to(target)
    try:
        before = world(base)
        for test in ("True", "False"):
            answer = stack.post(notebook(), folder=f"linked-{dangling}/sub", filename="x.ipynb", test=test)
            assert answer.status_code == 400 and "symbolic link" in answer.json()["message"]
        assert world(base) == before
        if not dangling:
            assert stat.S_IMODE(target.stat().st_mode) == 0o700 and target.stat().st_uid == os.geteuid()
    finally:
        link.unlink()


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_symlinked_file_in_the_home_is_skipped_never_followed(stack, dangling):
    """The old service followed a dangling symlink in the home, wrote its target and chowned it."""
    target = stack.outside / f"target-{dangling}.ipynb"
    if not dangling:
        target.write_text("precious")
    folder = stack.home() / f"files-{dangling}"
    folder.mkdir()
    if IS_ROOT:
        import pwd

        entry = pwd.getpwnam(stack.users[0])
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    (folder / "x.ipynb").symlink_to(target)
    outside_before = snapshot(stack.outside)
    dry = stack.post("TEST", folder=f"files-{dangling}", filename="x.ipynb", test="True")
    made = stack.post(notebook(), folder=f"files-{dangling}", filename="x.ipynb", test="False")
    assert dry.json()["fileName"] == made.json()["fileName"] == "x 2.ipynb"
    assert snapshot(stack.outside) == outside_before
    assert (folder / "x.ipynb").is_symlink() and owned_by(folder / "x 2.ipynb", stack.users[0])


def test_a_link_to_another_users_home_is_refused(stack, base):
    other = stack.home(stack.users[1])
    link = stack.home() / "neighbour"
    link.symlink_to(os.path.relpath(other, stack.home()))
    try:
        before = world(base)
        answer = stack.post(notebook(), folder="neighbour", filename="x.ipynb", test="False")
        assert answer.status_code == 400 and world(base) == before
    finally:
        link.unlink()


def test_a_body_over_the_limit_is_413_and_nothing_is_written(stack, base):
    """The old service took any body (100 MB and more) and wrote it."""
    before = world(base)
    answer = stack.post(b"x" * (10 * 2**20 + 1), folder="big", filename="x.ipynb", test="False")
    assert answer.status_code == 413 and "10 MiB" in answer.json()["message"]
    chunked = stack.post(iter([b"y" * 2**20] * 11), folder="big", filename="x.ipynb", test="False")
    assert chunked.status_code == 413
    assert world(base) == before


def test_an_absurd_content_length_is_answered_at_once_never_a_hang(stack):
    with socket.create_connection(("127.0.0.1", stack.service.port), timeout=10) as sock:
        sock.sendall(b"POST /?token=x&folder=a&filename=x.ipynb HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000000000000\r\n\r\n{")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 413") and b'"message"' in data


def test_concurrent_creates_of_one_name_all_succeed_with_distinct_names(stack):
    token = stack.token()
    bodies = [notebook(f"print({i})") for i in range(24)]

    def create(body: str) -> requests.Response:
        return stack.post(body, token=token, folder="race", filename="same.ipynb", test="False")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(create, bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies)
    names = [a.json()["fileName"] for a in answers]
    assert len(set(names)) == len(bodies)
    written = sorted((stack.home() / "race" / name).read_text() for name in names)
    assert written == sorted(bodies)


def test_no_token_ever_appears_in_an_answer_or_a_log_line(stack, canary):
    """The old service echoed the token in its 401 answer; openBIS repeats it in its error."""
    answers = [
        stack.post(notebook(), token=f"{stack.users[0]}-{canary}", folder="f", filename="x.ipynb"),
        stack.post(notebook(), token=f"$pat-{stack.users[0]}-{canary}", folder="f", filename="x.ipynb"),
        stack.post(notebook(), token=canary, folder="../f", filename="x.ipynb"),
        stack.post(b"x" * (11 * 2**20), token=canary, folder="f", filename="x.ipynb"),
        stack.post("{", token=canary, folder="f", filename="x.ipynb"),
        requests.get(f"{stack.url}/?token={canary}", timeout=10),
        requests.get(f"{stack.url}/nowhere?token={canary}", timeout=10),
    ]
    assert [a.status_code for a in answers] == [401, 401, 400, 413, 401, 400, 404]
    for answer in answers:
        assert canary not in answer.text and canary not in str(answer.headers)
    log_lines(stack.service, lambda lines: sum(line["status"] == 404 for line in lines) >= 1)
    log = stack.service.log_path.read_text()
    assert canary not in log
    assert not [t for t in stack.tokens if t in log]


@pytest.mark.skipif(not IS_ROOT, reason="ownership by throwaway users needs root (CI runs as root)")
def test_after_the_corpus_every_path_in_the_home_belongs_to_the_user(stack):
    """The old service wrote as root and chowned; folders it made stayed root's."""
    assert stack.post(notebook(), folder="owned/a/b", filename="x.ipynb").status_code == 200
    home = stack.home()
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or name.startswith("files-"):
                continue  # links and folders the tests planted as root
            assert owned_by(home / os.path.relpath(path, home), stack.users[0]), path
