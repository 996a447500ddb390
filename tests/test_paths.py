"""The one path-safety check: relative paths and globs, roots with links, path segments,
folder names derived from labels, and temporary names that fit NAME_MAX."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbplugins import paths
from nbplugins.errors import ValidationError


@pytest.mark.parametrize(("value", "reason"), [
    ("", "empty"),
    ("/etc/passwd", "not an absolute one"),
    ("\\\\server\\share", "not an absolute one"),
    ("C:/Users/x", "not an absolute one"),
    ("..", "climb"),
    ("a/../../b", "climb"),
    ("a\\..\\..\\b", "climb"),
    ("data/*.csv\x00", "NUL"),
])
def test_check_relative_refuses_and_names_what(value, reason):
    with pytest.raises(ValidationError, match=reason) as info:
        paths.check_relative(value, "node 'b': dependencies entry")
    assert str(info.value).startswith(f"node 'b': dependencies entry {value!r}")


@pytest.mark.parametrize("value", ["data.csv", "data/*.csv", "a/b/c", "./x", "a..b", "**/*.txt"])
def test_check_relative_accepts_relative_paths_and_globs(value):
    assert paths.check_relative(value, "x") == value


@pytest.mark.parametrize("value", ["q/.", "a//b", "./a", "a/"])
def test_strict_refuses_empty_and_dot_parts(value):
    paths.check_relative(value, "key")  # fine as a pattern
    with pytest.raises(ValidationError, match="empty or '.' part"):
        paths.check_relative(value, "key", strict=True)


def test_inside_follows_links_and_returns_the_joined_path(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out").symlink_to(outside)
    (root / "in").symlink_to(root / "sub")
    assert paths.inside(root, "sub/file.txt", "output") == root / "sub" / "file.txt"
    assert paths.inside(root, "in/file.txt", "output") == root / "in" / "file.txt"  # link inside the root
    assert paths.inside(tmp_path / "not-yet", "a/b", "output") == tmp_path / "not-yet" / "a" / "b"
    with pytest.raises(ValidationError, match="outside") as info:
        paths.inside(root, "out/file.txt", "node 'p': outputs entry")
    assert "node 'p': outputs entry 'out/file.txt'" in str(info.value)
    for bad in ("../x", "/etc", "a/../../x"):
        with pytest.raises(ValidationError):
            paths.inside(root, bad, "output")
    with pytest.raises(ValidationError, match="longer than 255 bytes"):
        paths.inside(root, "x" * 256, "output")
    assert paths.inside(root, "x" * 255, "output").name == "x" * 255


@pytest.mark.parametrize(("value", "reason"), [
    ("", "cannot be a file"), (".", "cannot be a file"), ("..", "cannot be a file"),
    ("a/b", "'/'"), ("../../x", "'/'"), ("a\\b", "backslash"), ("a\x00b", "NUL"),
])
def test_safe_component_refuses_what_is_not_one_segment(value, reason):
    with pytest.raises(ValidationError, match=reason) as info:
        paths.safe_component(value, "run 3: parameter 'label' value")
    assert str(info.value).startswith(f"run 3: parameter 'label' value {value!r}")


@pytest.mark.parametrize("value", ["0.5", "a..b", "-x", ".hidden", "é"])
def test_safe_component_accepts_single_segments(value):
    assert paths.safe_component(value, "value") == value


def test_folder_names_are_safe_unique_readable_and_stable():
    labels = ["..", "/abs", "a/../..", "../..", "a b", "a_b", "A_B", "Préparation des données", "x" * 300, "",
              "node", "prepare"]
    names = paths.folder_names(labels)
    assert list(names) == labels
    assert len({n.casefold() for n in names.values()}) == len(labels)  # unique, even ignoring case
    for name in names.values():
        assert paths.safe_component(name, "folder") == name
        assert not name.startswith((".", "-")) and len(name) <= paths.FOLDER_MAX + 4
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    assert names["a_b"] == "a_b" and names["prepare"] == "prepare" and names["node"] == "node"  # safe labels kept
    assert names["a b"] == "a_b-2" and names["A_B"] == "A_B-3"  # collisions get -2, -3
    assert names["Préparation des données"] == "Preparation_des_donnees"
    assert names["/abs"] == "abs" and names[".."].startswith("node-")
    assert paths.folder_names(labels) == names  # the same pipeline gives the same folders
    # names a run record kept stay, when they are still safe and unique
    kept = paths.folder_names(["a b", "a_b"], previous={"a b": "a_b", "a_b": "a_b-2"})
    assert kept == {"a b": "a_b", "a_b": "a_b-2"}
    hostile = paths.folder_names(["a", "b"], previous={"a": "../..", "b": "x/y"})
    assert hostile == {"a": "a", "b": "b"}


def test_temp_names_fit_name_max_for_long_names(tmp_path):
    suffix = ".nbp-part-0123abcd"
    short = paths.temp_name("data.csv", suffix)
    assert short == f".data.csv{suffix}"
    for name in ("n" * 250, "é" * 127, "n" * 255):
        tmp = paths.temp_name(name, suffix)
        assert len(tmp.encode()) <= paths.NAME_MAX and tmp.endswith(suffix) and tmp.startswith(".")
        tmp.encode("utf-8")  # whole characters only
        (tmp_path / tmp).write_text("fits")  # the file system takes it
    assert os.path.basename(paths.temp_name("a" * 300, ".tmp", prefix="")) == "a" * 251 + ".tmp"
    assert Path(tmp_path / paths.temp_name("a" * 300, ".tmp", prefix="")).parent == tmp_path
