"""Local homes: written as the user, part by part without following links, never overwriting.

These call :class:`nbplugins.serve.homes.LocalHomes` in-process (as root it forks a child that
switches to the throwaway user, exactly as the service does).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from nbplugins.serve.base import BadRequest, Forbidden, NotFound
from nbplugins.serve.homes import LocalHomes
from tests.serve.conftest import IS_ROOT, make_users, notebook, owned_by, remove_users, snapshot


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    root = tmp_path_factory.mktemp("homes")
    names = make_users(root, 1)
    yield root, names[0]
    remove_users(root, names)


@pytest.fixture
def home(users, tmp_path):
    """A clean home for each test, and an outside folder beside the homes."""
    root, user = users
    path = root / user
    for entry in list(path.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            import shutil

            shutil.rmtree(entry)
        else:
            entry.unlink()
    outside = tmp_path / "outside"
    outside.mkdir()
    return LocalHomes(str(root / "{user}")), user, path, outside


def test_a_create_makes_the_folders_and_the_file_owned_by_the_user(home):
    homes, user, path, _ = home
    body = notebook()
    placed = homes.place(user, ("a", "b"), "x.ipynb", body.encode())
    assert placed.filename == "x.ipynb" and placed.path == str(path / "a" / "b" / "x.ipynb")
    assert (path / "a" / "b" / "x.ipynb").read_text() == body
    for made in (path / "a", path / "a" / "b", path / "a" / "b" / "x.ipynb"):
        assert owned_by(made, user)


def test_a_dry_run_names_the_free_name_and_writes_nothing(home):
    homes, user, path, _ = home
    before = snapshot(path)
    assert homes.place(user, ("new", "deep"), "x.ipynb", None).filename == "x.ipynb"
    homes.place(user, (), "y.ipynb", b"{}")
    assert homes.place(user, (), "y.ipynb", None).filename == "y 2.ipynb"
    assert set(snapshot(path)) - set(before) == {"y.ipynb"}


def test_an_existing_file_is_never_overwritten(home):
    homes, user, path, _ = home
    homes.place(user, (), "x.ipynb", b"first")
    second = homes.place(user, (), "x.ipynb", b"second")
    third = homes.place(user, (), "x.ipynb", b"third")
    assert (second.filename, third.filename) == ("x 2.ipynb", "x 3.ipynb")
    assert [(path / n).read_bytes() for n in ("x.ipynb", "x 2.ipynb", "x 3.ipynb")] == [b"first", b"second", b"third"]


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_folder_is_refused_and_its_target_untouched(home, dangling):
    homes, user, path, outside = home
    target = outside / "target"
    if not dangling:
        target.mkdir(mode=0o700)
    (path / "link").symlink_to(target)
    before = snapshot(outside.parent)
    for content in (None, b"{}"):
        with pytest.raises(BadRequest, match="symbolic link"):
            homes.place(user, ("link", "sub"), "x.ipynb", content)
    assert snapshot(outside.parent) == before


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_file_is_skipped_and_its_target_untouched(home, dangling):
    homes, user, path, outside = home
    target = outside / "target.ipynb"
    if not dangling:
        target.write_text("precious")
    (path / "x.ipynb").symlink_to(target)
    before = snapshot(outside)
    assert homes.place(user, (), "x.ipynb", None).filename == "x 2.ipynb"
    assert homes.place(user, (), "x.ipynb", b"new").filename == "x 2.ipynb"
    assert snapshot(outside) == before and (path / "x.ipynb").is_symlink()


def test_a_file_where_a_folder_is_asked_for_is_refused(home):
    homes, user, path, _ = home
    (path / "f").write_text("")
    with pytest.raises(BadRequest, match="is a file"):
        homes.place(user, ("f", "x"), "x.ipynb", b"{}")


def test_a_failed_write_answers_an_error_and_leaves_nothing(home):
    homes, user, path, _ = home
    locked = path / "locked"
    locked.mkdir()
    if IS_ROOT:
        os.chown(locked, 0, 0)  # root's folder in the user's home: the user cannot write in it
        locked.chmod(0o755)
    else:
        locked.chmod(0o555)
    try:
        with pytest.raises(Forbidden, match="permission denied"):
            homes.place(user, ("locked",), "x.ipynb", b"{}")
        with pytest.raises(Forbidden):
            homes.place(user, ("locked", "sub"), "x.ipynb", b"{}")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_concurrent_creates_of_one_name_all_get_distinct_names(home):
    homes, user, path, _ = home
    results: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        placed = homes.place(user, ("race",), "x.ipynb", f"body {i}".encode())
        with lock:
            results.append(placed.filename)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 16
    bodies = {(path / "race" / name).read_text() for name in results}
    assert bodies == {f"body {i}" for i in range(16)}


def test_a_user_without_a_home_is_404(home, tmp_path):
    homes, _, _, _ = home
    with pytest.raises(NotFound):
        homes.place("nbpnosuchuser", (), "x.ipynb", None)


@pytest.mark.skipif(not IS_ROOT, reason="only a root service looks users up in the account database")
def test_a_root_service_refuses_users_without_an_account_and_root_itself(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "nbpghost").mkdir()
    homes = LocalHomes(str(tmp_path / "{user}"))
    with pytest.raises(NotFound, match="no account"):
        homes.place("nbpghost", (), "x.ipynb", b"{}")
    with pytest.raises(NotFound, match="never writes as root"):
        homes.place("root", (), "x.ipynb", b"{}")
    assert list(Path(tmp_path / "root").iterdir()) == []


def test_a_homes_template_without_user_is_refused():
    with pytest.raises(BadRequest, match="user"):
        LocalHomes("/home")
