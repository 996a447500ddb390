"""The folder and file name rules of the provisioning service, and the unique-name rule."""

from __future__ import annotations

import pytest

from nbplugins.serve import names
from nbplugins.serve.base import BadRequest


@pytest.mark.parametrize("folder, parts", [
    ("", ()), ("a", ("a",)), ("a/b/c", ("a", "b", "c")), ("a/b/", ("a", "b")),
    ("My Space/Project 1/EXP-2", ("My Space", "Project 1", "EXP-2")), ("%2e%2e", ("%2e%2e",)),
])
def test_plain_relative_folders_are_split_into_their_parts(folder, parts):
    assert names.folder_parts(folder) == parts


@pytest.mark.parametrize("folder, says", [
    ("/etc", "absolute"), ("\\\\server\\share", "absolute"), ("C:/x", "absolute"),
    ("..", "'..'"), ("a/../..", "'..'"), ("a/./b", "'.'"), ("a//b", "empty"),
    ("a\x00b", "control character"), ("a\nb", "control character"), ("..\\..\\etc", "backslash"),
    (".ssh", "hidden"), ("a/.config", "hidden"), ("a/" + "x" * 300, "longer than"),
    ("/".join(["d"] * 40), "deeper"), ("x" * 2000, "longer than"),
])
def test_unsafe_folders_are_refused_naming_the_reason(folder, says):
    with pytest.raises(BadRequest, match=says):
        names.folder_parts(folder)


@pytest.mark.parametrize("filename, says", [
    ("a/b.ipynb", "not a path"), ("../x.ipynb", "not a path"), (".bashrc", "hidden"), (".x.ipynb", "hidden"),
    ("x.py", "must end with .ipynb"), (".ipynb", "hidden"), ("", "empty"), ("..", "'..'"),
    ("x\x00.ipynb", "control character"), ("a\\b.ipynb", "backslash"), ("n" * 250 + ".ipynb", "longer than"),
])
def test_unsafe_file_names_are_refused_naming_the_reason(filename, says):
    with pytest.raises(BadRequest, match=says):
        names.check_filename(filename)


def test_a_plain_notebook_name_is_accepted_as_it_is():
    assert names.check_filename("Experiment 1 (copy).ipynb") == "Experiment 1 (copy).ipynb"


def test_taken_names_get_a_number_as_the_old_service_and_macos_do():
    assert list(names.candidates("name.ipynb", tries=4)) == ["name.ipynb", "name 2.ipynb", "name 3.ipynb",
                                                             "name 4.ipynb"]


def test_a_numbered_name_of_the_longest_accepted_name_still_fits_a_file_name():
    longest = "n" * (names.FILENAME_MAX - len(".ipynb")) + ".ipynb"
    assert all(len(name.encode()) <= 255 for name in names.candidates(names.check_filename(longest)))


@pytest.mark.parametrize("user", ["../root", "a/b", ".hidden", "", "-rf", "x" * 100, "a\x00"])
def test_user_names_that_cannot_name_a_home_are_refused(user):
    with pytest.raises(BadRequest):
        names.check_user(user)


@pytest.mark.parametrize("user", ["alice", "anne-marie", "alice@egi.eu", "u_1.x"])
def test_ordinary_and_email_like_user_names_are_accepted(user):
    assert names.check_user(user) == user
