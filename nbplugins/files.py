"""Local files written whole or not at all, and small secret files read without blocking.

:func:`write_atomic` (and :func:`atomic_writer` for streams) is the one way nbplugins writes a file that someone may read while it
is written (run records, reports, pipeline files, exported DAGs, cached credentials): the
data goes to a temporary name beside the target (:func:`nbplugins.paths.temp_name`, so a
long name still fits) and is renamed over it, so a reader sees the old file or the new one.

:func:`read_secret_file` reads a token or key file: a regular file of at most
:data:`MAX_FILE_SIZE` bytes, refused at once when it is a FIFO, a device or too big.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from nbplugins.errors import ValidationError
from nbplugins.paths import temp_name

MAX_FILE_SIZE = 64 * 1024  # a token or key file is a few KiB; anything bigger is not one


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int | None = 0o600) -> Iterator[BinaryIO]:
    """A binary handle whose bytes appear at ``path`` only when the block ends without error.

    The data goes to a temporary name beside ``path`` and is renamed over it at the end, so
    readers never see half a file; on any failure the temporary file is removed and ``path``
    is untouched. ``mode`` is the file's permission bits exactly (0600 by default: tokens,
    keys, run state); ``None`` gives what a new file gets (0666 less the umask), for files
    meant to be shared. Missing parent folders are created (0700 when the file is private).
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    directory = directory or "."
    private = mode is not None and not mode & 0o077
    os.makedirs(directory, mode=0o700 if private else 0o777, exist_ok=True)
    tmp = os.path.join(directory, temp_name(name, f".tmp-{os.getpid()}-{os.urandom(4).hex()}"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600 if mode is not None else 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes, mode: int | None = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_writer`); ``str`` as UTF-8."""
    with atomic_writer(path, mode) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def read_text(path: str | os.PathLike[str], kind: str, error: type[Exception] = ValidationError) -> str:
    """A file people hand us (grid, table, spec, pipeline, config) as text, or one line naming it:
    not found, unreadable, or not UTF-8 text (``kind`` says what it should be: "a spec is YAML text")."""
    try:
        with open(path, "rb") as handle:
            return handle.read().decode()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file (byte {exc.start} is not UTF-8); {kind}") from None


def read_secret_file(path: str | os.PathLike[str], what: str, error: type[Exception] = ValidationError,
                     missing_ok: bool = False) -> str | None:
    """The text of a small secret file (a token or key file), read without blocking or filling memory.

    Only a regular file of at most :data:`MAX_FILE_SIZE` bytes is read: it is opened with
    ``O_NONBLOCK`` and checked with ``fstat`` before any read, so a FIFO, a device such as
    ``/dev/zero`` or a huge file is refused at once. A problem raises ``error``
    (:class:`~nbplugins.errors.ValidationError` unless given) with one line starting with
    ``what``, which names the path. A missing file gives None when ``missing_ok``.
    """
    try:
        fd = os.open(os.path.expanduser(os.fspath(path)), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"{what}: does not exist") from None
    except PermissionError:
        raise error(f"{what}: cannot read it (permission denied)") from None
    except OSError as exc:
        raise error(f"{what}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        mode, size = info.st_mode, info.st_size
        if stat.S_ISDIR(mode):
            raise error(f"{what}: is a directory, not a file")
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
            raise error(f"{what}: is {kind}, not a regular file; secrets are read from regular files only")
        chunks: list[bytes] = []
        got = 0
        while got <= MAX_FILE_SIZE and size <= MAX_FILE_SIZE:
            chunk = os.read(fd, MAX_FILE_SIZE + 1 - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if size > MAX_FILE_SIZE or got > MAX_FILE_SIZE:
            raise error(f"{what}: is {_size(max(size, got))}, too big for a token or key file "
                        f"(at most {MAX_FILE_SIZE // 1024} KiB)")
    except OSError as exc:
        raise error(f"{what}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode()
    except UnicodeDecodeError:
        raise error(f"{what}: is not UTF-8 text, so not a token or key file") from None


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{n / 1024:.0f} KiB"
