"""The one downloader of remote-job results: streamed, parallel, atomic, to any storage URL.

Services hand over :class:`Output` items (a link or an inline value); :func:`download` fetches
links over http(s) only (never ``file://`` or other schemes a server may name), sends the
service's credentials only to hosts the caller trusts, writes each file under a temporary
name and renames it, sanitises names, optionally unpacks zips, and writes ``results.json``
beside the files. A remote destination (``s3://``, ``onedata://``) receives the finished set
through the staging layer, so it is verified and published atomically too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import zipfile
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from nbplugins import storage
from nbplugins.errors import ServiceError, ValidationError
from nbplugins.files import atomic_writer, write_atomic
from nbplugins.paths import check_relative, folder_names
from nbplugins.retry import Retry, describe, foreign_as
from nbplugins.secrets import redact

RESULTS_FILE = "results.json"
CHUNK = 1 << 20
_EXTENSIONS = {
    "application/json": ".json", "application/zip": ".zip", "text/csv": ".csv", "text/plain": ".txt",
    "image/png": ".png", "application/x-netcdf": ".nc", "application/geo+json": ".geojson",
    "text/xml": ".xml", "application/xml": ".xml", "text/html": ".html", "application/pdf": ".pdf",
}


@dataclass(frozen=True)
class Output:
    """A result a service offers: by reference (``href``) or inline (``value``)."""

    name: str
    href: str | None = None
    value: bytes | str | None = None
    media_type: str = "application/octet-stream"
    description: str = ""


@dataclass(frozen=True)
class Result:
    """A result brought home: what it is and where it landed."""

    name: str
    description: str
    media_type: str
    location: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _file_name(output: Output) -> str:
    """A name for the output's file: the link's last segment if it has an extension, else the name."""
    if output.href:
        tail = unquote(urlsplit(output.href).path.rstrip("/").rsplit("/", 1)[-1])
        if "." in tail.strip("."):
            return tail
    base = output.name
    ext = _EXTENSIONS.get(output.media_type.split(";")[0].strip().lower(), "")
    return base if not ext or base.lower().endswith(ext) else base + ext


class Downloader:
    """Fetches :class:`Output` links with one session; credentials only for trusted hosts."""

    def __init__(self, *, headers: Mapping[str, str] | None = None, trusted_hosts: Collection[str] = (),
                 session: requests.Session | None = None, retry: Retry | None = None,
                 timeout: tuple[float, float] = (10.0, 120.0), verify: bool | str = True) -> None:
        self.headers = dict(headers or {})
        self.trusted = {h.lower() for h in trusted_hosts}
        self.session = session or requests.Session()
        self.retry = retry or Retry()
        self.timeout = timeout
        self.verify = verify

    def headers_for(self, url: str) -> dict[str, str]:
        """The credentials for ``url``: only when its host is one the caller trusts."""
        host = (urlsplit(url).hostname or "").lower()
        return dict(self.headers) if host in self.trusted else {}

    def fetch(self, output: Output, target: Path, progress: Any = None) -> int:
        """Write ``output`` to ``target`` atomically; return its size in bytes."""
        if output.href is None:
            data = output.value if isinstance(output.value, bytes) else json.dumps(output.value).encode() \
                if not isinstance(output.value, str) else output.value.encode()
            write_atomic(target, data, mode=None)
            if progress is not None:
                progress.update(len(data))
            return len(data)
        scheme = urlsplit(output.href).scheme.lower()
        if scheme not in ("http", "https"):
            raise ServiceError(f"output {output.name!r}: refusing to fetch a {scheme or 'relative'}:// link "
                               f"({redact(output.href)}); only http(s) results are downloaded")

        def once() -> int:
            size = 0
            with self.session.get(output.href, headers=self.headers_for(output.href), stream=True,
                                  timeout=self.timeout, verify=self.verify) as response:
                if response.status_code >= 400:
                    error = ServiceError(f"output {output.name!r}: {redact(output.href)} answered HTTP "
                                         f"{response.status_code}", response.status_code)
                    raise error
                with atomic_writer(target, mode=None) as handle:
                    for chunk in response.iter_content(CHUNK):
                        handle.write(chunk)
                        size += len(chunk)
                        if progress is not None:
                            progress.update(len(chunk))
            return size

        return self.retry.call(once, what=f"download {output.name}", map_error=foreign_as(
            lambda exc: ServiceError(f"output {output.name!r}: download failed: {describe(exc)}")))


def _unpack(archive: Path, folder: Path) -> list[Path]:
    """Extract a zip into ``folder``, refusing members that would land outside it."""
    files = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = check_relative(info.filename, f"{archive.name} member")
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, atomic_writer(target, mode=None) as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            files.append(target)
    archive.unlink()
    return files


def download(outputs: Sequence[Output], dest: str, *, downloader: Downloader | None = None,
             unpack: bool = False, concurrency: int = 4, progress: bool = True,
             profile: str | None = None) -> list[Result]:
    """Bring every output to ``dest`` (a local folder, ``s3://`` or ``onedata://``); list what landed.

    Files are fetched in parallel into a local folder (``dest`` itself when it is local),
    each atomically; ``unpack`` replaces a zip by its members; ``results.json`` lists the
    results. A remote ``dest`` then receives the folder through staging (verified, with a
    manifest). Nothing is written to a remote destination unless every download succeeded.
    """
    from tqdm import tqdm

    downloader = downloader or Downloader()
    scheme, local_path = storage.split_url(dest)
    wanted = [_file_name(o) for o in outputs]
    labels = [w if wanted.count(w) == 1 else f"{i + 1}-{w}" for i, w in enumerate(wanted)]
    files = list(folder_names(labels).values())
    scratch = tempfile.TemporaryDirectory(prefix="nbplugins-results-") if scheme != "file" else None
    folder = Path(scratch.name if scratch else local_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = threading.Lock()
        bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="results", file=sys.stderr,
                   disable=not progress, leave=True)

        class Counter:
            def update(self, n: int) -> None:
                with lock:
                    bar.total = max(bar.total or 0, bar.n + n)
                    bar.update(n)

        counter = Counter()
        with ThreadPoolExecutor(max(1, min(concurrency, len(outputs) or 1))) as pool:
            sizes = list(pool.map(lambda pair: downloader.fetch(pair[0], folder / pair[1], counter),
                                  zip(outputs, files, strict=True)))
        bar.close()
        landed: list[tuple[Output, Path, int]] = []
        for output, name, size in zip(outputs, files, sizes, strict=True):
            path = folder / name
            is_zip = output.media_type.startswith("application/zip") or name.lower().endswith(".zip")
            if unpack and is_zip:
                try:
                    members = _unpack(path, folder / Path(name).stem)
                except zipfile.BadZipFile:
                    raise ValidationError(f"output {output.name!r}: --unpack: {name} is not a zip file") from None
                landed.extend((output, m, m.stat().st_size) for m in members)
            else:
                landed.append((output, path, size))
        where = (lambda p: os.path.abspath(p)) if scratch is None else \
            (lambda p: f"{dest.rstrip('/')}/{p.relative_to(folder).as_posix()}")
        results = [Result(name=o.name, description=o.description, media_type=o.media_type,
                          location=where(p), size=s) for o, p, s in landed]
        write_atomic(folder / RESULTS_FILE, json.dumps([r.as_dict() for r in results], indent=2) + "\n", mode=None)
        if scratch is not None:
            from nbplugins.storage import staging

            staging.consume(staging.put(str(folder), dest, profile=profile), progress=progress)
        return results
    finally:
        if scratch is not None:
            scratch.cleanup()


class SubmitWaitDownload:
    """What the DataMiner and OGC API - Processes clients share: ``run`` is submit, wait, download.

    A subclass gives ``submit``, ``wait``, ``outputs`` and ``downloader``.
    """

    def run(self, process: str, inputs: Mapping[str, Any], dest: str, *, timeout: float | None = None,
            unpack: bool = False, progress: bool = True, cancel: threading.Event | None = None,
            profile: str | None = None) -> list[Result]:
        """Submit, wait, and download every result to ``dest``; the results as a typed list."""
        job = self.submit(process, inputs, profile=profile)  # type: ignore[attr-defined]
        job = self.wait(job, timeout=timeout, progress=progress, cancel=cancel)  # type: ignore[attr-defined]
        return download(self.outputs(job), dest, downloader=self.downloader(),  # type: ignore[attr-defined]
                        unpack=unpack, progress=progress, profile=profile)
