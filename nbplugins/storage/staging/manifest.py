"""``_MANIFEST.json``: the sizes and checksums of a published set, written last so a reader can tell it is whole."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, Protocol

MANIFEST = "_MANIFEST.json"
MANIFEST_FORMAT = "nbplugins-manifest/1"


class Recorded(Protocol):
    """What a manifest records of one file (a finished :class:`~nbplugins.storage.staging.plan.Entry`)."""

    rel: str
    size: int
    result_etag: str | None
    result_part_size: int | None
    result_xxh3: str | None


def parse(body: bytes) -> dict[str, Any]:
    """The manifest's entries by relative path; {} when ``body`` is not a manifest of this format."""
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None
    return files if isinstance(files, dict) else {}


def render(entries: Iterable[Recorded]) -> bytes:
    """The manifest of ``entries`` (sorted by path), as written beside them."""
    files = {e.rel: {"size": e.size, "etag": e.result_etag, "part_size": e.result_part_size,
                     **({"xxh3_128": e.result_xxh3} if e.result_xxh3 else {})}
             for e in sorted(entries, key=lambda e: e.rel)}
    return json.dumps({"format": MANIFEST_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "checksum": "etag: S3 ETag (MD5 of the file, or MD5 of part MD5s + '-N' for part_size "
                                   "parts); xxh3_128: XXH3-128 of the whole file",
                       "files": files}, indent=1, sort_keys=True).encode()
