"""Folder and file names the provisioning service accepts, and the unique-name rule.

A folder is a relative path inside a user's home; a file name is one ``.ipynb`` segment.
Both come from a web request, so every refusal is a :class:`NameRefused` saying what was
wrong (the HTTP layer answers 400). An existing name is never reused: ``name.ipynb``,
``name 2.ipynb``, ``name 3.ipynb``... as the old service and macOS do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from nbplugins.paths import NAME_MAX
from nbplugins.serve.base import BadRequest

SUFFIX = ".ipynb"
#: Longest file name accepted (bytes): room is left for a `` 1000`` suffix within NAME_MAX.
FILENAME_MAX = NAME_MAX - 8
#: Longest folder path (bytes) and deepest folder accepted.
FOLDER_MAX = 1024
DEPTH_MAX = 32
#: How many numbered names are tried before the request is refused.
TRIES = 1000
#: User names that can name a home: what useradd and JupyterHub accept, and e-mail-like subjects.
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class NameRefused(BadRequest):
    """A folder, file or user name that cannot be used; the message says which and why."""


def _segment(part: str, what: str) -> None:
    """Refuse a segment that is empty, ``.``/``..``, hidden, holds a control character or a
    backslash, or is longer than a file name may be."""
    if part in ("", ".", ".."):
        raise NameRefused(f"{what} has an empty, '.' or '..' part; give a plain relative path")
    if _CONTROL.search(part):
        raise NameRefused(f"{what} holds a control character (a NUL byte or a newline)")
    if "\\" in part:
        raise NameRefused(f"{what} holds a backslash; separate folders with '/'")
    if part.startswith("."):
        raise NameRefused(f"{what} has a hidden part ({part[:40]!r}); dot-folders and dot-files are refused")
    if len(part.encode("utf-8", "surrogateescape")) > FILENAME_MAX:
        raise NameRefused(f"{what} has a part longer than {FILENAME_MAX} bytes")


def folder_parts(folder: str) -> tuple[str, ...]:
    """The segments of ``folder`` (``""`` or ``"/"``-free relative path; ``"a/b/"`` -> ``("a", "b")``)."""
    if _CONTROL.search(folder):
        raise NameRefused("folder holds a control character (a NUL byte or a newline)")
    if folder.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", folder):
        raise NameRefused("folder must be relative to the home, not an absolute path")
    if len(folder.encode("utf-8", "surrogateescape")) > FOLDER_MAX:
        raise NameRefused(f"folder is longer than {FOLDER_MAX} bytes")
    text = folder.rstrip("/")
    if not text:
        return ()
    parts = tuple(text.split("/"))
    if len(parts) > DEPTH_MAX:
        raise NameRefused(f"folder is deeper than {DEPTH_MAX} levels")
    for part in parts:
        _segment(part, "folder")
    return parts


def check_filename(filename: str) -> str:
    """Refuse a file name that is not one plain ``NAME.ipynb`` segment; return it unchanged."""
    if "/" in filename:
        raise NameRefused("filename must be a name, not a path (it holds '/'); put folders in 'folder'")
    _segment(filename, "filename")
    if not filename.endswith(SUFFIX) or filename == SUFFIX:
        raise NameRefused(f"filename must end with {SUFFIX} (a notebook), as in 'analysis{SUFFIX}'")
    return filename


def check_user(user: str) -> str:
    """Refuse a user name (from an auth backend) that cannot name a home folder."""
    if not isinstance(user, str) or not _USER.match(user) or ".." in user:
        raise NameRefused("the authenticated user name cannot name a home folder")
    return user


def candidates(filename: str, tries: int = TRIES) -> Iterator[str]:
    """``name.ipynb``, ``name 2.ipynb``, ``name 3.ipynb``... (``tries`` names in all)."""
    stem = filename[: -len(SUFFIX)]
    yield filename
    for n in range(2, tries + 1):
        yield f"{stem} {n}{SUFFIX}"


def relative_path(parts: tuple[str, ...], filename: str) -> str:
    """The notebook's path relative to the home, ``/``-separated."""
    return "/".join((*parts, filename))
