"""Paths built from other people's data stay inside their root: the one path-safety check.

Pipeline files, specs, grids, tables and S3 keys come from other people. Every path built
from them goes through this module:

* :func:`check_relative`: a path or glob pattern, checked as text (no filesystem): relative,
  no ``..`` part, no NUL byte; ``strict`` also refuses empty and ``.`` parts (S3 keys, which
  map one to one onto files);
* :func:`inside`: ``root / relative`` after :func:`check_relative`, refused when it resolves
  (symbolic links followed) outside ``root``;
* :func:`safe_component`: a value substituted into one path segment (no separator, not
  ``.`` or ``..``, not empty, no NUL byte);
* :func:`folder_names`: safe, unique folder names derived from display labels (Elyra node
  labels are names people read, never paths);
* :func:`temp_name`: a temporary name beside a file that still fits ``NAME_MAX`` bytes.

Every refusal is a :class:`~nbplugins.errors.ValidationError` that names what was refused.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

from nbplugins.errors import ValidationError

#: Longest file name (one path segment) in bytes on Linux, macOS and most filesystems.
NAME_MAX = 255
#: Longest folder name :func:`folder_names` derives (room left for a ``-N`` suffix).
FOLDER_MAX = 64

_DRIVE = re.compile(r"^[A-Za-z]:")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def check_relative(pattern: str, what: str, *, strict: bool = False) -> str:
    """Refuse a path or glob that is empty, absolute, climbs with ``..`` or holds a NUL byte.

    ``what`` names the field (``"node 'b' dependencies entry"``); the message adds the value.
    Backslashes count as separators, so ``..\\x`` is refused on every platform. ``strict``
    also refuses empty and ``.`` parts (``a//b``, ``q/.``). Returns ``pattern`` unchanged.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValidationError(f"{what} {pattern!r}: an empty path")
    if "\x00" in pattern:
        raise ValidationError(f"{what} {pattern!r}: contains a NUL byte")
    if pattern.startswith(("/", "\\")) or _DRIVE.match(pattern):
        raise ValidationError(f"{what} {pattern!r}: must be a relative path, not an absolute one")
    parts = pattern.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValidationError(f"{what} {pattern!r}: must not climb out of its folder with '..'")
    if strict and any(part in ("", ".") for part in parts):
        raise ValidationError(f"{what} {pattern!r}: has an empty or '.' part, which names no file")
    return pattern


def inside(root: str | os.PathLike[str], relative: str | os.PathLike[str], what: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root`` (symbolic links followed).

    Checks ``relative`` with :func:`check_relative`, then resolves both paths (``root`` need
    not exist yet). Returns the joined, unresolved path, so links inside ``root`` keep their name.
    """
    text = os.fspath(relative)
    check_relative(text, what)
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in text.split(os.sep)):
        raise ValidationError(f"{what} {text!r}: has a part longer than {NAME_MAX} bytes, which no file can be named")
    path = Path(root) / text
    real_root = Path(root).resolve()
    real = path.resolve()
    if real != real_root and not real.is_relative_to(real_root):
        raise ValidationError(f"{what} {text!r}: resolves to {real}, outside {real_root} (a symbolic link points out)")
    return path


def safe_component(text: str, what: str) -> str:
    """Refuse a value that cannot be one path segment: ``/``, ``\\``, NUL, ``.``, ``..``, empty.

    For values substituted into a path (sweep output patterns); returns ``text`` unchanged.
    """
    if text in ("", ".", ".."):
        raise ValidationError(f"{what} {text!r}: cannot be a file or folder name")
    for char, name in (("/", "'/'"), ("\\", "a backslash"), ("\x00", "a NUL byte")):
        if char in text:
            raise ValidationError(f"{what} {text!r}: contains {name}, so it cannot stay one file or folder name")
    return text


def _slug(label: str) -> str:
    """A readable ASCII folder name for a label: accents dropped, other characters as ``_``."""
    text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text).strip("._-")[:FOLDER_MAX].strip("._-")
    return text or "node"


def folder_names(labels: Iterable[str], previous: Mapping[str, str] | None = None) -> dict[str, str]:
    """A safe folder name for each label, unique per call even where file systems ignore case.

    A label that is already a safe name (``[A-Za-z0-9._-]``, not starting with ``.`` or ``-``,
    at most ``FOLDER_MAX`` characters) keeps it; others are slugified (``"Load data/raw"`` ->
    ``Load_data_raw``, ``".."`` -> ``node``); collisions get ``-2``, ``-3``. ``previous`` (names
    a run record kept) are kept where they are still safe and unique, so a resumed run finds
    its folders. Labels must be unique (a repeated label gets one entry).
    """
    labels = list(dict.fromkeys(labels))
    names: dict[str, str] = {}
    taken: set[str] = set()

    def claim(label: str, name: str) -> None:
        names[label] = name
        taken.add(name.casefold())

    for label in labels:  # names a run record kept: still safe and unique, they stay
        old = (previous or {}).get(label)
        if isinstance(old, str) and _slug(old) == old and old.casefold() not in taken:
            claim(label, old)
    for label in labels:  # labels that are already safe names keep them, whatever their order
        if label not in names and _slug(label) == label and label.casefold() not in taken:
            claim(label, label)
    for label in labels:
        if label in names:
            continue
        base = name = _slug(label)
        n = 2
        while name.casefold() in taken:
            name = f"{base}-{n}"
            n += 1
        claim(label, name)
    return {label: names[label] for label in labels}


def temp_name(name: str, suffix: str, *, prefix: str = ".") -> str:
    """``prefix + name + suffix`` for a temporary file beside ``name``, within ``NAME_MAX`` bytes.

    A long ``name`` is shortened (whole characters) so the result fits; ``suffix`` (which
    should hold something unique, e.g. a random tag) is kept whole.
    """
    room = NAME_MAX - len(prefix.encode()) - len(suffix.encode())
    if room < 1:
        raise ValueError(f"temporary name prefix and suffix are longer than {NAME_MAX} bytes")
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > room:
        cut = room
        while cut and (raw[cut] & 0xC0) == 0x80:  # not inside a multi-byte character
            cut -= 1
        name = raw[:cut].decode("utf-8", "surrogateescape")
    return f"{prefix}{name}{suffix}"
