"""The one storage layer: a URL (and optional S3 profile) -> an fsspec filesystem with credentials.

``s3://bucket/key`` goes to s3fs with a resolved :mod:`nbplugins.storage.s3` profile,
``onedata://...`` to the Onedata filesystem (``fsspec.specs`` entry point), plain paths and
``file://`` to the local disk. Every remote byte in nbplugins moves through here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbplugins.errors import StorageError


@dataclass
class Location:
    """Where a URL points: its filesystem, the path inside it, and the resolved S3 settings."""

    url: str
    scheme: str
    make_fs: Callable[[], Any]
    path: str
    s3: Any = None  # nbplugins.storage.s3.S3Settings for s3:// URLs

    @property
    def fs(self) -> Any:
        """The fsspec filesystem, built on first use (s3fs imports take a second)."""
        if "_fs" not in self.__dict__:
            self.__dict__["_fs"] = self.make_fs()
        return self.__dict__["_fs"]

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def join(self, *parts: str) -> str:
        """The path of ``parts`` below this location (``/``-separated)."""
        base = self.path.rstrip("/")
        tail = "/".join(p.strip("/") for p in parts if p)
        if self.is_local:
            return os.path.join(self.path, *[p for p in parts if p])
        return f"{base}/{tail}" if tail else base

    def url_of(self, path: str) -> str:
        return path if self.is_local else f"{self.scheme}://{path}"


Factory = Callable[[str, str, "str | None"], Location]
_BACKENDS: dict[str, Factory] = {}


def register(scheme: str, factory: Factory) -> None:
    """Register a backend: ``factory(url, path_without_scheme, profile) -> Location``."""
    _BACKENDS[scheme] = factory


def split_url(url: str) -> tuple[str, str]:
    """``("s3", "bucket/key")`` for ``s3://bucket/key``; ``("file", path)`` for local paths."""
    if not isinstance(url, str) or not url:
        raise StorageError("empty storage URL")
    if "://" not in url:
        return "file", url
    scheme, rest = url.split("://", 1)
    return scheme.lower(), rest


def locate(url: str, profile: str | None = None) -> Location:
    """Resolve ``url`` into a :class:`Location` (filesystem with credentials, path)."""
    scheme, rest = split_url(url)
    factory = _BACKENDS.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in sorted(_BACKENDS) if s != "file")
        raise StorageError(f"{url}: unknown storage scheme {scheme!r} (known: {known}, or a local path)")
    return factory(url, rest, profile)


def filesystem(url: str, profile: str | None = None) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` (credentials resolved) and the path inside it."""
    loc = locate(url, profile)
    return loc.fs, loc.path


def _local(url: str, rest: str, profile: str | None) -> Location:
    return Location(url, "file", _local_fs, os.path.abspath(os.path.expanduser(rest)))


def _local_fs() -> Any:
    """fsspec's local filesystem, imported only when asked for (staging reads local files itself)."""
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()


def _s3(url: str, rest: str, profile: str | None) -> Location:
    from nbplugins.storage import s3

    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise StorageError(f"{url}: no bucket in the URL (expected s3://BUCKET/KEY)")
    settings = s3.resolve(profile)

    def make() -> Any:
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **settings.s3fs_options())

    return Location(url, "s3", make, rest, s3=settings)


def _onedata(url: str, rest: str, profile: str | None) -> Location:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:
        raise StorageError(f"{url}: the onedata:// filesystem is not available: {exc}") from None
    return Location(url, "onedata", lambda: fs, path)


register("file", _local)
register("s3", _s3)
register("s3a", _s3)
register("onedata", _onedata)
