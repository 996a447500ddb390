"""fsspec filesystem for Onedata over the Oneprovider REST API v3: ``onedata://<space>/<path>``.

The URL's first component is the space name (``name@spaceId`` also works when two spaces share
a name); the rest is the path inside the space. The Oneprovider comes from the ``provider``
storage option, ``[onedata] provider`` or ``ONEDATA_PROVIDER``; when none is set it is found
through Onezone (``ONEDATA_ZONE``, EGI DataHub by default) as the official client does.

Tokens, first found wins: the ``token`` storage option, ``[onedata] token`` / ``ONEDATA_TOKEN``,
or a temporary Onedata token minted at Onezone from the EGI Check-in token, re-minted when the
provider refuses it (:mod:`nbplugins.storage.onezone`, which also finds the provider of a space).

Why not the official ``onedatarestfsspec``: it cannot overwrite, stops listings at 1000 entries
and ignores the block size; its ``onedatafilerestclient`` asks Onezone for the token scope every
2 s, never retries, and truncates on any write without an offset. This module talks REST itself
through :class:`nbplugins.http.HttpClient` (retries, one token refresh on 401, redaction),
caches file ids and listings, reads in large ranged GETs with readahead, and writes in large
offset PUTs, several in flight, to a temporary name that is moved over the target (CDMI
``move``, the only rename the API has) when the file is closed. A failed or abandoned write
never leaves a half-written file under the final name; while an existing file is replaced
there is a short moment (delete, then move) when the name does not exist. Open files are
:mod:`nbplugins.storage.onedata_file`; this module is one class filling fsspec's contract,
a little over 600 lines, kept whole so the contract reads in one place.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import threading
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from fsspec.callbacks import DEFAULT_CALLBACK
from fsspec.spec import AbstractFileSystem

from nbplugins import config as config_mod
from nbplugins import secrets
from nbplugins.errors import AuthError, ServiceError, StorageError, TransientError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry, is_tls_error, is_transient
from nbplugins.storage.onedata_file import OnedataFile
from nbplugins.storage.onezone import (
    ONECLIENT_HELP,
    ONECLIENT_VAR,
    OnedataToken,
    OnezoneRefused,
    base_url,
    find_provider,
)
from nbplugins.tokens import TokenResolver

__all__ = ["OnedataFile", "OnedataFileSystem", "OnedataToken", "OnezoneRefused"]

log = logging.getLogger(__name__)

MiB = 1 << 20
LIST_ATTRS = ["fileId", "name", "type", "size", "mtime", "ctime", "posixPermissions"]
ALLOWED = (400, 403, 404, 409, 416)
_TYPES = {"REG": "file", "DIR": "directory", "SYMLNK": "link", "LNK": "file"}


def _verify(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes", "on", ""):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    if not os.path.exists(text):
        raise StorageError(f"Onedata: CA bundle {text!r} (verify) does not exist")
    return text


# ----------------------------------------------------------------------------- filesystem


class _ConfigKey:
    """The config a new instance would read, as a class attribute computed when read.

    fsspec keys its instance cache on the values of ``_extra_tokenize_attributes``; with this
    one in the list, a changed ``[onedata]``/``[token]`` config or environment gives a new
    instance instead of a cached one built from the old settings.
    """

    def __get__(self, instance: Any, owner: type) -> tuple:
        cfg = config_mod.get()
        return (dataclasses.astuple(cfg.onedata), dataclasses.astuple(cfg.token), bool(os.environ.get(ONECLIENT_VAR)))


class OnedataFileSystem(AbstractFileSystem):
    """``onedata://space/path`` over the Oneprovider REST API v3 (see the module docstring)."""

    protocol = ("onedata",)
    root_marker = ""
    cachable = True
    _config_key = _ConfigKey()
    _extra_tokenize_attributes = ("_config_key",)

    def __init__(self, provider: str | None = None, token: str | None = None, zone: str | None = None,
                 verify: bool | str | None = None, block_size: int | None = None,
                 concurrency: int | None = None, timeout: float | None = None,
                 checkin_token: str | None = None, retry: Retry | None = None,
                 page_size: int = 1000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        cfg = config_mod.get().onedata
        self.zone = base_url(zone or cfg.zone)
        self.provider = base_url(provider or cfg.provider) if (provider or cfg.provider) else None
        self.verify = _verify(cfg.verify if verify is None else verify)
        self.blocksize = int(block_size or cfg.block_size_mib * MiB)
        self.concurrency = max(1, int(concurrency or cfg.concurrency))
        self.timeout = (10.0, float(timeout or cfg.timeout))
        self.page_size = page_size
        self.retry = (retry or Retry.from_config()).with_(retryable=_retryable)
        given, source = (token, "the 'token' storage option") if token else (cfg.token, "ONEDATA_TOKEN / [onedata] token")
        resolver = TokenResolver(explicit=checkin_token) if checkin_token else None
        self.tokens = OnedataToken(token=given, source=source, zone=self.zone, verify=self.verify,
                                   retry=self.retry, ttl=cfg.token_ttl, idp=cfg.idp, resolver=resolver)
        self._clients: dict[str, HttpClient] = {}
        self._space_base: dict[str, str] = {}
        self._ids: dict[str, str] = {}
        self._refusal = threading.local()  # why the provider refused this thread's last request (HTTP 401)

    # ---- plumbing

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[return-value]
        path = str(path)
        if path.startswith("onedata://"):
            path = path[len("onedata://"):]
        return path.strip("/")

    def _client(self, space: str) -> HttpClient:
        base = self.provider or self._discover(space)
        client = self._clients.get(base)
        if client is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=self.concurrency + 4)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.hooks["response"].append(self._note_refusal)
            client = HttpClient(f"{base}/api/v3/oneprovider", service=f"Onedata ({base})", token=self.tokens,
                                header="X-Auth-Token", scheme="", retry=self.retry, timeout=self.timeout,
                                verify=self.verify, session=session)
            self._clients[base] = client
        return client

    def _note_refusal(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Keep why a 401 was given (a response hook: it runs in the thread that sent the request)."""
        if response.status_code == 401:
            self._refusal.text = _refusal_reason(response)

    def _discover(self, space: str) -> str:
        """The Oneprovider supporting ``space``, asked of Onezone once per space."""
        if space not in self._space_base:
            self._space_base[space] = find_provider(self.tokens, space, retry=self.retry, verify=self.verify,
                                                    timeout=self.timeout)
        return self._space_base[space]

    def _call(self, method: str, space: str, path: str, what: str, passthrough: tuple[int, ...] = (),
              **kwargs: Any) -> requests.Response:
        """One request to the provider of ``space``; Onedata errors become OSErrors naming ``what``."""
        client = self._client(space)
        kwargs.setdefault("verify", self.verify)  # per request: REQUESTS_CA_BUNDLE beats session.verify
        self._refusal.text = ""
        try:
            response = client.request(method, path, allow=ALLOWED, **kwargs)
        except OnezoneRefused:
            raise
        except AuthError:
            reason = getattr(self._refusal, "text", "") or "the token is not valid"
            source = self.tokens.static.source if self.tokens.static else "Onezone (minted)"
            raise AuthError(f"Onedata refused the access token from {source} "
                            f"(HTTP 401: {reason}); check ONEDATA_TOKEN or the Check-in token") from None
        if response.status_code >= 400 and response.status_code not in passthrough:
            raise _error(response, method, what)
        return response

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        space, _, rel = path.partition("/")
        if not space:
            raise StorageError("Onedata: a path needs a space: onedata://<space>/<path>")
        return space, rel

    def _file_id(self, path: str) -> str:
        """File id of ``path`` (cached; lookups are one request each)."""
        fid = self._ids.get(path)
        if fid is not None:
            return fid
        space, rel = self._split(path)
        quoted = urllib.parse.quote(f"{space}/{rel}" if rel else space, safe="/@")
        fid = self._call("POST", space, f"lookup-file-id/{quoted}", _url(path)).json()["fileId"]
        self._ids[path] = fid
        return fid

    def _by_id(self, method: str, path: str, suffix: str, **kwargs: Any) -> requests.Response:
        """A request on ``/data/{id}{suffix}``, retried once with a fresh lookup if the id went stale."""
        space, _ = self._split(path)
        fid = self._file_id(path)
        try:
            return self._call(method, space, f"data/{fid}{suffix}", _url(path), **kwargs)
        except FileNotFoundError:
            if self._ids.pop(path, None) is None:
                raise
            fid = self._file_id(path)
            return self._call(method, space, f"data/{fid}{suffix}", _url(path), **kwargs)

    def _forget(self, path: str) -> None:
        """Drop cached ids and listings of ``path``, everything under it, and its parents."""
        prefix = path + "/"
        for key in [k for k in list(self._ids) if k == path or k.startswith(prefix)]:
            self._ids.pop(key, None)
        for key in [k for k in list(self.dircache) if k.startswith(prefix)]:
            self.dircache.pop(key, None)
        self.invalidate_cache(path)

    def invalidate_cache(self, path: str | None = None) -> None:
        if path is None:
            self.dircache.clear()
            return
        path = self._strip_protocol(path)
        self.dircache.pop(path, None)
        while path:
            path = self._parent(path)
            self.dircache.pop(path, None)

    # ---- metadata

    def _entry(self, parent: str, attrs: dict[str, Any]) -> dict[str, Any]:
        name = f"{parent}/{attrs['name']}" if parent else attrs["name"]
        if attrs.get("fileId"):
            self._ids[name] = attrs["fileId"]
        kind = _TYPES.get(attrs.get("type", "REG"), "other")
        return {"name": name, "size": 0 if kind == "directory" else int(attrs.get("size") or 0), "type": kind,
                "mtime": attrs.get("mtime"), "ctime": attrs.get("ctime"), "file_id": attrs.get("fileId"),
                "mode": attrs.get("posixPermissions")}

    def ls(self, path: str, detail: bool = True, refresh: bool = False, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        entries = None if refresh else self.dircache.get(path)
        if entries is None:
            entries = self._list(path)
            self.dircache[path] = entries
        return entries if detail else [e["name"] for e in entries]

    def _list(self, path: str) -> list[dict[str, Any]]:
        if not path:
            if not self.provider:
                raise StorageError("Onedata: listing all spaces needs ONEDATA_PROVIDER (or the 'provider' option)")
            spaces = self._call("GET", "", "spaces", "onedata://").json()
            return [{"name": s["name"], "size": 0, "type": "directory", "space_id": s.get("spaceId")} for s in spaces]
        space, _ = self._split(path)
        fid = self._file_id(path)
        out: list[dict[str, Any]] = []
        token = None
        while True:
            query = f"limit={self.page_size}" + (f"&token={urllib.parse.quote(token)}" if token else "")
            try:
                page = self._by_id("GET", path, f"/children?{query}", json={"attributes": LIST_ATTRS}).json()
            except NotADirectoryError:
                return [self.info(path)]
            children = page.get("children") or []
            if not out and len(children) == 1 and children[0].get("fileId") == fid and page.get("isLast"):
                # a regular file lists as itself
                info = self._entry(self._parent(path), children[0])
                if info["type"] != "directory":
                    return [info]
            out.extend(self._entry(path, child) for child in children)
            token = page.get("nextPageToken")
            if page.get("isLast", True) or not token:
                return out

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if not path:
            return {"name": "", "size": 0, "type": "directory"}
        parent = self._parent(path)
        for entry in self.dircache.get(parent, None) or []:
            if entry["name"] == path:
                return entry
        attrs = self._by_id("GET", path, "", json={"attributes": LIST_ATTRS}).json()
        entry = self._entry(parent, {**attrs, "name": path.rsplit("/", 1)[-1]})
        return entry

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            self.info(path)
            return True
        except FileNotFoundError:
            return False

    def modified(self, path: str) -> datetime:
        mtime = self.info(path).get("mtime")
        if mtime is None:
            raise NotImplementedError("Onedata: this provider reports no mtime")
        return datetime.fromtimestamp(mtime, UTC)

    def created(self, path: str) -> datetime:
        path = self._strip_protocol(path)
        try:
            attrs = self._by_id("GET", path, "", json={"attributes": ["creationTime"]}).json()
        except ServiceError:
            raise NotImplementedError("Onedata: this provider does not report creationTime (needs >= 21.02.6)") from None
        return datetime.fromtimestamp(attrs["creationTime"], UTC)

    # ---- directories

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        space, rel = self._split(path)
        if not rel:
            self.info(path)  # spaces are made in Onezone, not here
            raise FileExistsError(errno.EEXIST, "Onedata: the space already exists", _url(path))
        root = self._file_id(space)
        quoted = urllib.parse.quote(rel, safe="/")
        parents = "true" if create_parents else "false"
        fid = self._call("PUT", space, f"data/{root}/path/{quoted}?type=DIR&create_parents={parents}",
                         _url(path)).json().get("fileId")
        self.invalidate_cache(path)
        if fid:
            self._ids[path] = fid

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        try:
            self.mkdir(path, create_parents=True)
        except FileExistsError:
            if not exist_ok or not self.isdir(path):
                raise

    def rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        if self.ls(path, detail=False, refresh=True):
            raise OSError(errno.ENOTEMPTY, "Onedata: directory not empty", _url(path))
        self._delete(path)

    # ---- delete, move, copy

    def _delete(self, path: str) -> None:
        if "/" not in path:
            raise PermissionError(errno.EPERM, "Onedata: a space cannot be deleted here", _url(path))
        self._by_id("DELETE", path, "")
        self._forget(path)

    def rm_file(self, path: str) -> None:
        self._delete(self._strip_protocol(path))

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        if maxdepth is not None:
            return super().rm(path, recursive=recursive, maxdepth=maxdepth)
        paths = self.expand_path(path, recursive=False)
        for p in sorted(paths, reverse=True):
            try:
                kind = self.info(p)["type"]
            except FileNotFoundError:
                continue  # already gone with a deleted parent
            if kind == "directory" and not recursive:
                self.rmdir(p)
            else:
                self._delete(p)  # a directory goes in one request, with everything in it
        return None

    def _cdmi(self, op: str, src: str, dst: str, directory: bool) -> None:
        """Server-side move or copy inside one space (CDMI; the target must not exist)."""
        space, rel = self._split(dst)
        base = self._client(space).base_url.rsplit("/api/v3/oneprovider", 1)[0]
        quoted = urllib.parse.quote(f"{space}/{rel}", safe="/@") + ("/" if directory else "")
        kind = "application/cdmi-container" if directory else "application/cdmi-object"
        source = src + ("/" if directory else "")
        self._call("PUT", space, f"{base}/cdmi/{quoted}", f"{_url(src)} -> {_url(dst)}",
                   data=_json({op: source}),
                   headers={"X-CDMI-Specification-Version": "1.1.1", "Content-Type": kind})

    def _replace_target(self, dst: str) -> None:
        """Remove a file at ``dst`` so a move can take its name; refuse to replace a directory."""
        try:
            kind = self.info(dst)["type"]
        except FileNotFoundError:
            return
        if kind == "directory":
            raise IsADirectoryError(errno.EISDIR, "Onedata: a directory is in the way", _url(dst))
        self._delete(dst)

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        if isinstance(path1, list) or isinstance(path2, list) or src == dst or self._split(src)[0] != self._split(dst)[0]:
            return super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)
        info = self.info(src)
        directory = info["type"] == "directory"
        if self.isdir(dst):
            dst = f"{dst}/{src.rsplit('/', 1)[-1]}"
        if directory:
            if self.exists(dst):
                raise FileExistsError(errno.EEXIST, "Onedata: the target exists", _url(dst))
        else:
            self._replace_target(dst)
        self.makedirs(self._parent(dst), exist_ok=True)
        self._cdmi("move", src, dst, directory)
        self._forget(src)
        self._forget(dst)
        return None

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        info = self.info(src)
        if info["type"] == "directory":
            self.makedirs(dst, exist_ok=True)
            return
        if self._split(src)[0] != self._split(dst)[0]:
            with self.open(src, "rb") as fin, self.open(dst, "wb") as fout:
                while chunk := fin.read(self.blocksize):
                    fout.write(chunk)
            return
        self._replace_target(dst)
        self.makedirs(self._parent(dst), exist_ok=True)
        self._cdmi("copy", src, dst, False)
        self._forget(dst)

    # ---- content

    def _get_range(self, path: str, start: int, end: int | None) -> bytes:
        """Bytes [start, end) with one ranged GET (``end`` None: to the end)."""
        if end is not None and end <= start:
            return b""
        header = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        # a body that breaks off mid-way is asked for again (the status line was fine)
        return self.retry.call(lambda: self._get_range_once(path, header), what=f"Onedata GET {_url(path)} {header}")

    def _get_range_once(self, path: str, header: str) -> bytes:
        response = self._by_id("GET", path, "/content", headers={"Range": header}, allow_redirects=False,
                               passthrough=(416,), stream=True)
        if response.status_code == 416:
            response.close()
            return b""
        if response.status_code in (301, 302, 303, 307):
            response.close()
            raise IsADirectoryError(errno.EISDIR, "Onedata: is a directory", _url(path))
        return _body(response)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.info(path)["size"]
            start = max(0, size + start) if start is not None and start < 0 else start
            end = max(0, size + end) if end is not None and end < 0 else end
        if start is None and end is None:
            response = self._by_id("GET", path, "/content", allow_redirects=False, stream=True)
            if response.status_code in (301, 302, 303, 307):
                response.close()
                raise IsADirectoryError(errno.EISDIR, "Onedata: is a directory", _url(path))
            return _body(response)
        return self._get_range(path, start or 0, end)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        with self.open(path, "xb" if mode == "create" else "wb", **kwargs) as handle:
            handle.write(value)

    def put_file(self, lpath: str, rpath: str, callback: Any = DEFAULT_CALLBACK, mode: str = "overwrite",
                 **kwargs: Any) -> None:
        rpath = self._strip_protocol(rpath)
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        size = os.path.getsize(lpath)
        callback.set_size(size)
        with open(lpath, "rb") as source, self.open(rpath, "xb" if mode == "create" else "wb") as target:
            while chunk := source.read(target.blocksize):
                target.write(chunk)
                callback.relative_update(len(chunk))

    def get_file(self, rpath: str, lpath: str, callback: Any = DEFAULT_CALLBACK, outfile: Any = None,
                 **kwargs: Any) -> None:
        rpath = self._strip_protocol(rpath)
        info = self.info(rpath)
        if info["type"] == "directory":
            os.makedirs(lpath, exist_ok=True)
            return
        size = info["size"]
        callback.set_size(size)
        ranges = [(s, min(s + self.blocksize, size)) for s in range(0, size, self.blocksize)]
        if outfile is not None:
            for start, end in ranges:
                outfile.write(self._get_range(rpath, start, end))
                callback.relative_update(end - start)
            return
        os.makedirs(os.path.dirname(os.path.abspath(lpath)), exist_ok=True)
        tmp = f"{lpath}.nbp-{uuid.uuid4().hex[:8]}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            def fetch(span: tuple[int, int]) -> int:
                data = self._get_range(rpath, *span)
                if len(data) != span[1] - span[0]:
                    raise StorageError(f"Onedata: {_url(rpath)} changed while downloading (short read at {span[0]})")
                os.pwrite(fd, data, span[0])
                return len(data)

            with ThreadPoolExecutor(self.concurrency) as pool:
                for got in pool.map(fetch, ranges):
                    callback.relative_update(got)
            os.close(fd)
            fd = -1
            os.replace(tmp, lpath)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict | None = None, **kwargs: Any) -> OnedataFile:
        return OnedataFile(self, self._strip_protocol(path), mode, block_size=block_size or self.blocksize,
                           autocommit=autocommit, cache_options=cache_options, **kwargs)

    # ---- writes (used by OnedataFile)

    def _create(self, path: str, data: bytes, kind: str = "REG") -> str:
        """Create ``path`` with ``data`` in one request (parents made); FileExistsError if it exists."""
        space, rel = self._split(path)
        if not rel:
            raise IsADirectoryError(errno.EISDIR, "Onedata: a space is a directory", _url(path))
        root = self._file_id(space)
        quoted = urllib.parse.quote(rel, safe="/")
        response = self._call("PUT", space, f"data/{root}/path/{quoted}?type={kind}&create_parents=true",
                              _url(path), data=data, headers={"Content-Type": "application/octet-stream"})
        fid = response.json()["fileId"]
        self._ids[path] = fid
        self.invalidate_cache(path)
        return fid

    def _write_at(self, path: str, fid: str, offset: int, data: bytes) -> None:
        space, _ = self._split(path)
        self._call("PUT", space, f"data/{fid}/content?offset={offset}", _url(path), data=data,
                   headers={"Content-Type": "application/octet-stream"})


# ----------------------------------------------------------------------------- helpers


def _retryable(exc: BaseException) -> bool:
    """Transient failures, except TLS ones (retrying cannot make a certificate trusted)."""
    return is_transient(exc) and not is_tls_error(exc)


def _refusal_reason(response: requests.Response) -> str:
    """Why a Oneprovider answered 401, from its error body (redacted; a oneclient-only or expired token said so)."""
    try:
        err = response.json().get("error") or {}
        auth = (err.get("details") or {}).get("authError") or {}
        caveat = (auth.get("details") or {}).get("caveat") or {}
    except (ValueError, AttributeError):
        return ""
    text = auth.get("description") or err.get("description") or ""
    if caveat.get("interface") == "oneclient":
        text = f"{text} ({ONECLIENT_HELP})"
    elif caveat.get("type") == "time":
        text = f"{text} (the token has expired)"
    return secrets.redact(text)


def _body(response: requests.Response) -> bytes:
    """The whole body in 1 MiB reads (``.content`` reads 10 KiB at a time)."""
    try:
        return b"".join(response.iter_content(MiB))
    except requests.RequestException as exc:
        raise TransientError(f"Onedata: the download broke off: {type(exc).__name__}") from None
    finally:
        response.close()


def _url(path: str) -> str:
    return f"onedata://{path}"


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


def _error(response: requests.Response, method: str, what: str) -> Exception:
    """Map a Onedata error answer to the OSError fsspec callers expect, or a ServiceError."""
    try:
        err = response.json().get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    errno_name = ((err.get("details") or {}).get("errno") or "") if isinstance(err, dict) else ""
    description = secrets.redact(str(err.get("description") or response.reason or ""))
    mapping = {
        "enoent": FileNotFoundError, "eexist": FileExistsError, "eisdir": IsADirectoryError,
        "enotdir": NotADirectoryError, "eacces": PermissionError, "eperm": PermissionError,
    }
    if errno_name in mapping:
        code = getattr(errno, errno_name.upper(), errno.EIO)
        return mapping[errno_name](code, f"Onedata: {os.strerror(code)}", what)
    if errno_name == "enotempty":
        return OSError(errno.ENOTEMPTY, "Onedata: directory not empty", what)
    if response.status_code == 403:
        return PermissionError(errno.EACCES, f"Onedata: forbidden: {description}", what)
    if response.status_code == 404:
        return FileNotFoundError(errno.ENOENT, f"Onedata: not found: {description}", what)
    ident = err.get("id") if isinstance(err, dict) else None
    return ServiceError(f"Onedata: {method} {what} answered HTTP {response.status_code}"
                        f"{f' [{ident}]' if ident else ''}: {description}", response.status_code)
