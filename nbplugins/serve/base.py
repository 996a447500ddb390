"""What every part of the provisioning service shares: the errors it answers with (each
carries its HTTP status) and the contract of a home writer (local homes, JupyterHub API)."""

from __future__ import annotations

from dataclasses import dataclass

from nbplugins.errors import NbpluginsError


class ServeError(NbpluginsError):
    """A request the service refuses or cannot complete; ``status`` is the HTTP answer."""

    status = 500


class BadRequest(ServeError):
    """A missing or malformed argument, a body that is not a notebook, a refused name."""

    status = 400


class Unauthorized(ServeError):
    """The token is missing, invalid or expired (never repeated in the message)."""

    status = 401


class Forbidden(ServeError):
    """The user may not write there (permission denied in the home)."""

    status = 403


class NotFound(ServeError):
    """An unknown user (no account or no home), template or path."""

    status = 404


class Conflict(ServeError):
    """No free name is left for the notebook."""

    status = 409


class TooLarge(ServeError):
    """The body is bigger than ``--max-body``."""

    status = 413


class Upstream(ServeError):
    """The auth service or the hub failed or could not be reached."""

    status = 502


class WriteFailed(ServeError):
    """The notebook could not be written; nothing is left behind."""

    status = 500


#: Errors the home writers raise, by class name (a forked writer sends the name back).
ERRORS: dict[str, type[ServeError]] = {cls.__name__: cls for cls in (
    ServeError, BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, Upstream, WriteFailed)}


@dataclass(frozen=True)
class Placed:
    """Where a notebook went (or would go, in a dry run): its file name, its path as the
    answer gives it, and its path relative to the home (for the hub URL that opens it)."""

    filename: str
    path: str
    relative: str


class HomesBackend:
    """Writes notebooks into users' homes; ``content=None`` is a dry run that writes nothing."""

    name = "homes"
    #: A dry run makes only quick local system calls (no network): it runs on the event loop,
    #: sparing the hot path a thread hop and the GIL hand-offs that come with it.
    inline_dry_run = False

    def place(self, user: str, folder: tuple[str, ...], filename: str, content: bytes | None) -> Placed:
        """Pick the first free name (``name.ipynb``, ``name 2.ipynb``...) and create it with ``content``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and files."""
