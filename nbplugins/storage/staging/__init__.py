"""Staging: get / put / sync between local disk, S3 and Onedata; concurrent, verified, atomic, resumable.

A transfer is planned (list the source, map each file to its destination, refuse paths that
escape it), files already present with the same size and checksum are skipped, and the rest
move in parts on a thread pool: multipart uploads and ranged downloads, at most
``concurrency`` parts in flight, so memory stays near ``concurrency x part_size`` whatever
the file size. Every part goes through :mod:`nbplugins.retry`; every file is verified
(size; MD5 against the server's ETag, or the XXH3-128 a manifest recorded when the set was
published, which costs a twentieth of MD5's CPU) and published atomically
(S3 multipart completes at once; local files are written under a temporary name and
renamed). A directory transfer writes ``_MANIFEST.json`` (sizes and checksums) last, so a
reader can tell a complete set from a partial one.

The work is a generator of :class:`nbplugins.events.Event`; :func:`consume` runs it to its end
with tqdm bars and returns a :class:`Summary`, and templates, reports and services can consume
the same iterator.

Where things are: :mod:`.transfer` (the steps of one transfer), :mod:`.scheduler` (the thread
pool), :mod:`.endpoint` (the contract of a side) with :mod:`.local`, :mod:`.s3` and
:mod:`.fsspec_fs` (one class per backend), :mod:`.plan` and :mod:`.job` (what to move and
how to check it), :mod:`.checksums`, :mod:`.manifest`, :mod:`.events` (the summary and :func:`consume`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from nbplugins import storage
from nbplugins.errors import StorageError
from nbplugins.events import Event
from nbplugins.retry import Retry
from nbplugins.storage.staging.checksums import ChecksumMismatch
from nbplugins.storage.staging.endpoint import TMP_MARK
from nbplugins.storage.staging.events import Summary, consume
from nbplugins.storage.staging.manifest import MANIFEST, MANIFEST_FORMAT
from nbplugins.storage.staging.transfer import Transfer

__all__ = ["MANIFEST", "MANIFEST_FORMAT", "TMP_MARK", "ChecksumMismatch", "Summary", "consume", "get", "put", "sync",
           "transfer"]


def transfer(src: str, dest: str, *, profile: str | None = None, src_profile: str | None = None,
             dest_profile: str | None = None, concurrency: int | None = None, part_size: int | None = None,
             retry: Retry | None = None, cancel: threading.Event | None = None,
             manifest: bool = True, delete: bool = False, clobber: bool = True) -> Iterator[Event[int]]:
    """Copy a file or a directory tree from ``src`` to ``dest`` (any two storage URLs).

    ``delete``: afterwards, remove the files under ``dest`` that ``src`` does not have, so
    ``dest`` mirrors ``src`` (only once every file arrived; a failed transfer deletes nothing).
    A file at ``dest`` that differs is replaced (``Summary.replaced`` counts them); with
    ``clobber=False`` it is left alone (``Summary.kept``).
    """
    src_loc = storage.locate(src, src_profile or profile)
    dest_loc = storage.locate(dest, dest_profile or profile)
    job = Transfer(src_loc, dest_loc, concurrency=concurrency, part_size=part_size, retry=retry,
                   cancel=cancel, write_manifest=manifest, delete=delete, clobber=clobber)
    return job.events()


def get(src: str, dest: str, **options: Any) -> Iterator[Event[int]]:
    """Download ``src`` (s3://, onedata://) to the local path ``dest``, skipping what is there.

    Local files that differ are replaced and counted; ``clobber=False`` keeps them instead.
    """
    if storage.split_url(dest)[0] != "file":
        raise StorageError(f"{dest}: get downloads to a local path; use sync between two remote URLs")
    return transfer(src, dest, **options)


def put(src: str, dest: str, **options: Any) -> Iterator[Event[int]]:
    """Upload the local file or directory ``src`` to ``dest`` (s3://, onedata://)."""
    if storage.split_url(src)[0] != "file":
        raise StorageError(f"{src}: put uploads a local path; use sync between two remote URLs")
    return transfer(src, dest, **options)


def sync(src: str, dest: str, **options: Any) -> Iterator[Event[int]]:
    """Make ``dest`` hold every file of ``src`` (any two URLs), sending only what differs."""
    return transfer(src, dest, **options)
