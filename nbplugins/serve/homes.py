"""Local homes: notebooks created in ``/home/{user}`` without following a link or overwriting a file.

Every component below the home is opened relative to a directory descriptor with
``O_NOFOLLOW`` (a symbolic link planted in the home is refused, never followed), folders are
made with ``mkdirat`` and the file with ``O_CREAT | O_EXCL`` (an existing name, or a link to
one, is skipped: ``name 2.ipynb``; two creates racing for a name get two names). When the
service runs as root, the creation happens in a forked child that has dropped to the user's
groups, gid and uid first, so the file and every folder it makes belong to the user and the
kernel checks the user's own permissions; as another account the same code runs in-process.
The home itself (``--homes`` with ``{user}``) is the administrator's and is opened as given.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from nbplugins.serve import names
from nbplugins.serve.base import (
    ERRORS,
    BadRequest,
    Conflict,
    Forbidden,
    HomesBackend,
    NotFound,
    Placed,
    ServeError,
    WriteFailed,
)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FOLDER_MODE = 0o755
FILE_MODE = 0o644
ACCOUNT_TTL = 30.0
ACCOUNTS = 10_000


@dataclass(frozen=True)
class Account:
    """Who a root service writes as: uid, gid and supplementary groups (looked up before any fork)."""

    uid: int
    gid: int
    groups: tuple[int, ...]


def _where(parts: tuple[str, ...]) -> str:
    return "/".join(parts) or "the home"


def _os_error(exc: OSError, what: str) -> ServeError:
    """One error for a failed system call: what failed and why, never a path outside the request."""
    if isinstance(exc, PermissionError):
        return Forbidden(f"cannot write {what}: permission denied for the user")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteFailed(f"cannot write {what}: no space left (disk or quota full)")
    return WriteFailed(f"cannot write {what}: {exc.strerror or type(exc).__name__}")


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_folder(home_fd: int, parts: tuple[str, ...], *, create: bool) -> int | None:
    """A descriptor of ``home/parts`` opened part by part without following links; missing
    parts are made when ``create`` (else None is returned). A link or a file on the way is refused."""
    fd = os.dup(home_fd)
    for i, part in enumerate(parts):
        here = _where(parts[: i + 1])
        if create:
            try:
                os.mkdir(part, FOLDER_MODE, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as exc:
                os.close(fd)
                raise _os_error(exc, f"folder {here}") from None
        try:
            child = os.open(part, _DIR, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            return None
        except OSError as exc:
            try:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    if _is_link(part, fd):
                        raise BadRequest(f"folder {here} is a symbolic link in the home; "
                                         "the service never follows links") from None
                    raise BadRequest(f"folder {here} is a file, not a folder") from None
                raise _os_error(exc, f"folder {here}") from None
            finally:
                os.close(fd)
        os.close(fd)
        fd = child
    return fd


def free_name(home_fd: int, parts: tuple[str, ...], filename: str) -> str:
    """The name a create would use now (a dry run): the first of ``names.candidates`` not taken."""
    fd = open_folder(home_fd, parts, create=False)
    if fd is None:
        return filename
    try:
        for name in names.candidates(filename):
            try:
                os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return name
            except OSError as exc:
                raise _os_error(exc, f"in {_where(parts)}") from None
    finally:
        os.close(fd)
    raise Conflict(f"{filename} and {names.TRIES - 1} numbered names are all taken in {_where(parts)}")


def create(home_fd: int, parts: tuple[str, ...], filename: str, content: bytes) -> str:
    """Create the first free name with ``content`` (``O_CREAT | O_EXCL``); a failed write leaves nothing."""
    fd = open_folder(home_fd, parts, create=True)
    if fd is None:  # a folder vanished between mkdirat and openat
        raise WriteFailed(f"folder {_where(parts)} was removed while the notebook was created; try again")
    try:
        for name in names.candidates(filename):
            try:
                out = os.open(name, _NEW, FILE_MODE, dir_fd=fd)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _os_error(exc, f"{name} in {_where(parts)}") from None
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(out, view):]
            except OSError as exc:
                os.close(out)
                os.unlink(name, dir_fd=fd)
                raise _os_error(exc, f"{name} in {_where(parts)}") from None
            os.close(out)
            return name
    finally:
        os.close(fd)
    raise Conflict(f"{filename} and {names.TRIES - 1} numbered names are all taken in {_where(parts)}")


def as_user(account: Account, fn: Callable[..., str], *args: object) -> str:
    """Run ``fn(*args)`` in a forked child switched to ``account``; its result or its error comes back.

    The child makes system calls only (no logging, no imports, no locks) and leaves with
    ``os._exit``, so forking from a threaded server is safe.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read)
            os.setgroups(list(account.groups))
            os.setgid(account.gid)
            os.setuid(account.uid)
            reply = {"ok": fn(*args)}
            code = 0
        except ServeError as exc:
            reply = {"error": type(exc).__name__, "message": str(exc)}
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            reply = {"error": "WriteFailed", "message": f"cannot write as the user: {type(exc).__name__}"}
        try:
            os.write(write, json.dumps(reply).encode())
        finally:
            os._exit(code)
    os.close(write)
    try:
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise WriteFailed("the writer process ended without an answer; nothing was written") from None
    if "ok" in reply:
        return reply["ok"]
    raise ERRORS.get(reply.get("error"), WriteFailed)(reply.get("message") or "cannot write")


class LocalHomes(HomesBackend):
    """Homes on this host, from a template such as ``/home/{user}``."""

    name = "local homes"
    inline_dry_run = True

    def __init__(self, template: str) -> None:
        if "{user}" not in template or not os.path.isabs(template):
            raise BadRequest(f"--homes {template!r}: give an absolute path holding {{user}}, e.g. '/home/{{user}}'")
        self.template = template
        self._accounts: dict[str, tuple[Account, float]] = {}

    def home(self, user: str) -> str:
        """The user's home path (the name is checked: no separator, no dot-start)."""
        return self.template.replace("{user}", names.check_user(user))

    def account(self, user: str) -> Account | None:
        """The account a root service switches to; None when not root. Unknown user: 404.

        Found accounts are remembered for ``ACCOUNT_TTL`` seconds (the group database is
        read on every lookup otherwise), at most ``ACCOUNTS`` of them."""
        if os.geteuid() != 0:
            return None
        now = time.monotonic()
        known = self._accounts.get(user)
        if known is not None and known[1] > now:
            return known[0]
        found = self._lookup(user)
        if len(self._accounts) >= ACCOUNTS:
            self._accounts.clear()
        self._accounts[user] = (found, now + ACCOUNT_TTL)
        return found

    @staticmethod
    def _lookup(user: str) -> Account:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise NotFound(f"user {user} has no account on this host; ask the administrator to create it") from None
        if entry.pw_uid == 0:
            raise NotFound(f"user {user} is root; the service never writes as root")
        return Account(entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(user, entry.pw_gid)))

    def place(self, user: str, folder: tuple[str, ...], filename: str, content: bytes | None) -> Placed:
        """Dry run (``content=None``) or create, as the user when the service runs as root."""
        home = self.home(user)
        account = self.account(user)
        try:
            home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"user {user} has no home folder on this host yet; log in to the hub once") from None
        except OSError as exc:
            raise _os_error(exc, "the home") from None
        try:
            if content is None:
                name = free_name(home_fd, folder, filename)
            elif account is not None:
                name = as_user(account, create, home_fd, folder, filename, content)
            else:
                name = create(home_fd, folder, filename, content)
        finally:
            os.close(home_fd)
        return Placed(name, os.path.join(home, *folder, name), names.relative_path(folder, name))
