"""A contract-faithful Onezone + Oneprovider on 127.0.0.1 over HTTPS, data on disk.

It speaks the subset of the real REST API v3 that file clients use, with the real paths,
status codes and JSON shapes (learned from ``onedatafilerestclient`` 25.2 and op-worker's
``file_content_rest_handler`` / ``file_middleware_get_handler`` / ``file_attr_translator``
and ctool's error modules):

Onezone (``/api/v3/onezone``)
  POST /tokens/infer_access_token_scope     {"token"} -> {"validUntil", "dataAccessScope"}
  POST /user/tokens/temporary               X-Auth-Token ``egi:<IdP token>`` -> 201 {"token"}
Oneprovider (``/api/v3/oneprovider``)
  POST /lookup-file-id/{space}/{path}        -> {"fileId"}
  GET|PUT|DELETE /data/{id}                   attributes (camelCase / snake_case generations)
  GET|PUT /data/{id}/content                  Range -> 206; PUT ?offset= keeps, no offset truncates
  GET /data/{id}/children?limit&token         {"children", "isLast", "nextPageToken"}, limit <= 10000
  PUT|GET|DELETE /data/{id}/path/{path}       create (?type=REG|DIR, parents by default) -> 201 {"fileId"}
CDMI (``/cdmi``)
  PUT /cdmi/{space}/{path}  {"move"|"copy": "{space}/{src}"}  (application/cdmi-object or -container);
  like op-worker's cdmi_object_handler, only onto a name that does not exist yet

Errors are ``{"error": {"id", "description", "details"}}``: POSIX errors are 400 with
``details.errno`` (``enoent``, ``eexist``, ...), a refused token is 401 ``unauthorized`` with
``details.authError``. Spaces may be named ``name`` or ``name@spaceId`` in paths, as the
official client does. The Oneprovider's domain (for the official client's provider
discovery) is this server's own ``127.0.0.1:port``.

Test-only endpoints live under ``/__control`` (fault injection, request counters) and are not
part of the contract. Run: ``python -m nbplugins.sandbox.servers.onedata --port N --root DIR``
(tokens in ``ONEDATA_TEST_TOKENS``, comma-separated, so they never show in a process listing).

Over 600 lines because it is one contract: Onezone's token endpoints, the Oneprovider's file
API and CDMI share one file tree, one token check and one error model, and the official
client exercises them together; split, each part would only be read with the others.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import secrets as pysecrets
import shutil
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PROVIDER_VERSION = "21.02.8"
MAX_LIST = 10000
DEFAULT_LIST = 1000

CURRENT_ATTRS = [
    "fileId", "index", "type", "activePermissionsType", "posixPermissions", "acl", "name",
    "conflictingName", "path", "parentFileId", "displayGid", "displayUid", "creationTime",
    "atime", "mtime", "ctime", "size", "isFullyReplicatedLocally", "localReplicationRate",
    "originProviderId", "directShareIds", "ownerUserId", "hardlinkCount", "symlinkValue",
    "hasCustomMetadata", "effProtectionFlags", "effDatasetProtectionFlags",
    "effDatasetInheritancePath", "effQosInheritancePath", "aggregateQosStatus",
    "archiveRecallRootFileId",
]
DEPRECATED_TO_CURRENT = {
    "file_id": "fileId", "path": "path", "name": "name", "atime": "atime", "mtime": "mtime",
    "ctime": "ctime", "type": "type", "size": "size", "shares": "directShareIds",
    "index": "index", "storage_user_id": "displayUid", "storage_group_id": "displayGid",
    "owner_id": "ownerUserId", "parent_id": "parentFileId", "provider_id": "originProviderId",
    "hardlinks_count": "hardlinkCount", "is_fully_replicated": "isFullyReplicatedLocally",
    "mode": "posixPermissions",
}
CURRENT_TO_DEPRECATED = {v: k for k, v in DEPRECATED_TO_CURRENT.items()}
# what GET /data/{id} returns with no attribute selection (both generations, as op-worker)
DEFAULT_INSTANCE_ATTRS = [
    "fileId", "parentFileId", "name", "posixPermissions", "atime", "mtime", "ctime", "type",
    "size", "directShareIds", "index", "displayGid", "displayUid", "ownerUserId",
    "originProviderId", "hardlinkCount", "isFullyReplicatedLocally",
]
DEFAULT_CHILD_ATTRS = ["fileId", "name"]


# ----------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with its HTTP status."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(body.get("id"))
        self.status = status
        self.body = body
        self.headers = headers or {}


def posix(errno: str) -> ApiError:
    return ApiError(400, {"id": "posix", "details": {"errno": errno},
                          "description": f"Operation failed with POSIX error: {errno}."})


def unauthorized(auth_error: dict[str, Any] | None) -> ApiError:
    return ApiError(401, {"id": "unauthorized", "details": {"authError": auth_error},
                          "description": "You must authenticate yourself to perform this operation."})


TOKEN_INVALID = {"id": "tokenInvalid", "description": "Provided token is not valid."}


def bad_value(key: str, description: str, id_: str = "badValue") -> ApiError:
    return ApiError(400, {"id": id_, "details": {"key": key}, "description": description})


def not_found() -> ApiError:
    return ApiError(404, {"id": "notFound", "description": "The resource could not be found."})


# ----------------------------------------------------------------------------- certificate


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (it is its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nbplugins test Onedata")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    tmp = directory / "cert.pem.tmp"
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_path)
    return cert_path, key_path


# ----------------------------------------------------------------------------- state


class Store:
    """Spaces on disk plus the file-id registry and the token registry."""

    def __init__(self, root: Path, spaces: list[str], tokens: list[str], oneclient_tokens: list[str],
                 issuer: str | None, token_ttl_max: int) -> None:
        self.root = root
        self.lock = threading.RLock()
        self.provider_id = hashlib.md5(str(root).encode()).hexdigest()
        self.spaces: dict[str, str] = {}  # space id -> name
        for name in spaces:
            sid = hashlib.md5(f"space:{name}".encode()).hexdigest()
            self.spaces[sid] = name
            (root / sid).mkdir(parents=True, exist_ok=True)
        self.ids: dict[str, tuple[str, str]] = {}  # file id -> (space id, relative path)
        self.by_path: dict[tuple[str, str], str] = {}
        self.tokens: dict[str, float | None] = {t: None for t in tokens}  # token -> valid until
        self.oneclient_tokens = set(oneclient_tokens)
        self.issuer = issuer
        self.token_ttl_max = token_ttl_max
        self.faults: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.minted_for: list[str] = []
        for sid in self.spaces:
            self.file_id(sid, "")

    # ---- ids

    def file_id(self, sid: str, rel: str) -> str:
        """The stable object id of a path (minted on first sight, like a guid)."""
        with self.lock:
            key = (sid, rel)
            fid = self.by_path.get(key)
            if fid is None:
                raw = f"guid#{pysecrets.token_hex(16)}#{sid}".encode()
                fid = "0000000000" + raw.hex().upper()
                self.by_path[key] = fid
                self.ids[fid] = key
            return fid

    def forget(self, sid: str, rel: str) -> None:
        with self.lock:
            for key in [k for k in self.by_path if k[0] == sid and (k[1] == rel or k[1].startswith(rel + "/"))]:
                self.ids.pop(self.by_path.pop(key), None)

    def renamed(self, sid: str, old: str, new: str) -> None:
        with self.lock:
            for key in [k for k in self.by_path if k[0] == sid and (k[1] == old or k[1].startswith(old + "/"))]:
                fid = self.by_path.pop(key)
                rel = new + key[1][len(old):]
                self.by_path[(sid, rel)] = fid
                self.ids[fid] = (sid, rel)

    def resolve_id(self, fid: str) -> tuple[str, str]:
        """(space id, relative path) of a file id or space id; ENOENT if it is gone."""
        if fid in self.spaces:
            return fid, ""
        with self.lock:
            found = self.ids.get(fid)
        if found is None:
            if re.fullmatch(r"[0-9A-Fa-f]+", fid or ""):
                raise posix("enoent")
            raise bad_value("id", "Bad value: provided \"id\" is not a valid file id.", "badValueIdentifier")
        sid, rel = found
        if not self.disk(sid, rel).exists() and not self.disk(sid, rel).is_symlink():
            raise posix("enoent")
        return found

    def disk(self, sid: str, rel: str) -> Path:
        return self.root / sid / rel if rel else self.root / sid

    def space_by_specifier(self, spec: str) -> str:
        """Space id from ``name``, ``name@id`` or a bare id."""
        if "@" in spec:
            name, sid = spec.rsplit("@", 1)
            if self.spaces.get(sid) == name:
                return sid
            raise posix("enoent")
        for sid, name in self.spaces.items():
            if name == spec:
                return sid
        if spec in self.spaces:
            return spec
        raise posix("enoent")

    def split_path(self, path: str, empty: str = "enoent") -> tuple[str, str]:
        """(space id, checked relative path) of ``/space/rel``; ``empty`` is the error for no path."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise posix(empty)
        sid = self.space_by_specifier(parts[0])
        rel = "/".join(parts[1:])
        check_rel(rel)
        return sid, rel

    def resolve_path(self, path: str) -> tuple[str, str]:
        sid, rel = self.split_path(path)
        if not self.disk(sid, rel).exists():
            raise posix("enoent")
        return sid, rel

    # ---- attributes

    def attrs(self, sid: str, rel: str) -> dict[str, Any]:
        path = self.disk(sid, rel)
        st = path.stat()
        is_dir = path.is_dir()
        fid = self.file_id(sid, rel)
        parent = None if rel == "" else self.file_id(sid, rel.rsplit("/", 1)[0] if "/" in rel else "")
        name = self.spaces[sid] if rel == "" else rel.rsplit("/", 1)[-1]
        return {
            "fileId": fid, "index": base64.b64encode(name.encode()).decode(),
            "type": "DIR" if is_dir else "REG", "activePermissionsType": "posix",
            "posixPermissions": format(st.st_mode & 0o777, "03o"), "acl": [], "name": name,
            "conflictingName": None, "path": "/" + "/".join(filter(None, [self.spaces[sid], rel])),
            "parentFileId": parent, "displayGid": 0, "displayUid": 0,
            "creationTime": int(st.st_ctime), "atime": int(st.st_atime), "mtime": int(st.st_mtime),
            "ctime": int(st.st_ctime), "size": 0 if is_dir else st.st_size,
            "isFullyReplicatedLocally": True, "localReplicationRate": 1.0,
            "originProviderId": self.provider_id, "directShareIds": [], "ownerUserId": "user-nbplugins",
            "hardlinkCount": 1, "symlinkValue": None, "hasCustomMetadata": False,
            "effProtectionFlags": [], "effDatasetProtectionFlags": [],
            "effDatasetInheritancePath": "none", "effQosInheritancePath": "none",
            "aggregateQosStatus": "fulfilled", "archiveRecallRootFileId": None,
        }


def check_rel(rel: str) -> None:
    if any(p in (".", "..") for p in rel.split("/")) or "\x00" in rel:
        raise bad_value("path", "Bad value: invalid file path.", "badValueFilePath")


def select_attrs(full: dict[str, Any], generation: str, requested: list[str] | None) -> dict[str, Any]:
    """op-worker's file_attr_translator: the requested keys in the requested generation."""
    if generation == "current":
        out = {}
        for key in requested or []:
            if key not in CURRENT_ATTRS:
                raise ApiError(400, {"id": "badValueNotAllowed",
                                     "details": {"key": "attributes", "allowed": CURRENT_ATTRS + ["xattr.*"]},
                                     "description": "Bad value: provided \"attributes\" must be one of: ..."})
            out[key] = full[key]
        return out
    if generation == "deprecated":
        out = {}
        for key in requested or []:
            if key not in DEPRECATED_TO_CURRENT:
                raise ApiError(400, {"id": "badValueNotAllowed",
                                     "details": {"key": "attribute", "allowed": sorted(DEPRECATED_TO_CURRENT)},
                                     "description": "Bad value: provided \"attribute\" must be one of: ..."})
            out[key] = full[DEPRECATED_TO_CURRENT[key]]
        return out
    out = {key: full[key] for key in requested or []}
    for key in requested or []:
        if key in CURRENT_TO_DEPRECATED:
            out[CURRENT_TO_DEPRECATED[key]] = full[key]
    return out


# ----------------------------------------------------------------------------- handler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Oneprovider-test"
    disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms ACK waits
    store: Store  # set on the class by serve()

    def log_message(self, fmt: str, *args: Any) -> None:  # tokens never reach the log
        pass

    # ---- plumbing

    def do_GET(self) -> None:  # noqa: N802
        self.dispatch("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self.dispatch("PUT")

    def do_POST(self) -> None:  # noqa: N802
        self.dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self.dispatch("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802
        self.dispatch("HEAD")

    def read_body(self) -> bytes:
        if getattr(self, "_body", None) is not None:
            return self._body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self._body = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(length) if length else b""
        return self._body

    def send(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
             content_type: str = "application/json") -> None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        elif isinstance(body, bytes):
            data = body
        else:
            data = b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if data or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def dispatch(self, method: str) -> None:
        self._body = None
        parsed = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        raw_path = parsed.path
        try:
            if raw_path.startswith("/__control/"):
                self.control(method, raw_path)
                return
            self.count(method, raw_path)
            self.inject_fault(method, raw_path)
            if raw_path.startswith("/api/v3/onezone/"):
                self.onezone(method, raw_path[len("/api/v3/onezone"):])
            elif raw_path.startswith("/api/v3/oneprovider/"):
                self.oneprovider(method, raw_path[len("/api/v3/oneprovider"):])
            elif raw_path.startswith("/cdmi/"):
                self.cdmi(method, raw_path[len("/cdmi/"):])
            else:
                raise not_found()
        except ApiError as exc:
            self.read_body_quietly()
            self.send(exc.status, {"error": exc.body}, exc.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in the server: say so like the real one
            self.read_body_quietly()
            ref = pysecrets.token_hex(4)
            print(f"internal error {ref}: {type(exc).__name__}: {exc}", flush=True)
            self.send(500, {"error": {"id": "internalServerError", "details": {"reference": ref},
                                      "description": "The server has encountered an error while processing this request."}})

    def read_body_quietly(self) -> None:
        try:
            self.read_body()
        except Exception:
            self.close_connection = True

    def count(self, method: str, path: str) -> None:
        kind = "other"
        if "/content" in path:
            kind = "content"
        elif "/children" in path:
            kind = "children"
        elif "lookup-file-id" in path:
            kind = "lookup"
        with self.store.lock:
            key = f"{method} {kind}"
            self.store.counts[key] = self.store.counts.get(key, 0) + 1

    def inject_fault(self, method: str, path: str) -> None:
        with self.store.lock:
            for fault in self.store.faults:
                if fault["count"] <= 0:
                    continue
                if fault.get("method") and fault["method"] != method:
                    continue
                if fault.get("match") and fault["match"] not in path:
                    continue
                if fault.get("skip", 0) > 0:
                    fault["skip"] -= 1
                    continue
                fault["count"] -= 1
                status = int(fault.get("status", 503))
                body = {"id": "serviceUnavailable", "description": "Service unavailable (injected)."}
                if status < 500:
                    body = {"id": "forbidden", "description": "You are not authorized to perform this operation (injected)."}
                raise ApiError(status, body, {"Retry-After": "0"} if status in (429, 503) else None)

    def control(self, method: str, path: str) -> None:
        store = self.store
        if path == "/__control/fault" and method == "POST":
            fault = json.loads(self.read_body() or b"{}")
            fault.setdefault("count", 1)
            with store.lock:
                store.faults.append(fault)
            self.send(200, {"ok": True})
        elif path == "/__control/reset" and method == "POST":
            self.read_body()
            with store.lock:
                store.faults.clear()
                store.counts.clear()
            self.send(200, {"ok": True})
        elif path == "/__control/counts" and method == "GET":
            with store.lock:
                self.send(200, dict(store.counts))
        elif path == "/__control/minted" and method == "GET":
            with store.lock:
                self.send(200, {"count": len(store.minted_for), "subjects": list(store.minted_for)})
        else:
            raise not_found()

    # ---- authentication

    def presented_token(self) -> str | None:
        token = self.headers.get("X-Auth-Token")
        if token:
            return token.strip()
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return None

    def check_token(self, token: str | None, interface: str = "rest") -> None:
        if not token:
            raise unauthorized(None)
        store = self.store
        if token in store.oneclient_tokens and interface != "oneclient":
            raise unauthorized({"id": "tokenCaveatUnverified",
                                "details": {"caveat": {"type": "interface", "interface": "oneclient"}},
                                "description": "Provided token is not valid - the caveat "
                                               "'interface = oneclient' could not be verified."})
        with store.lock:
            known = token in store.tokens
            until = store.tokens.get(token)
        if not known and token not in store.oneclient_tokens:
            raise unauthorized(TOKEN_INVALID)
        if until is not None and until < time.time():
            raise unauthorized({"id": "tokenCaveatUnverified",
                                "details": {"caveat": {"type": "time", "validUntil": int(until)}},
                                "description": "Provided token is not valid - the caveat "
                                               f"'validUntil = {int(until)}' could not be verified."})

    def authenticate(self) -> None:
        self.check_token(self.presented_token())

    # ---- Onezone

    def onezone(self, method: str, path: str) -> None:
        store = self.store
        if path == "/configuration" and method == "GET":
            self.send(200, {"name": "nbplugins test zone", "domain": self.headers.get("Host", ""),
                            "version": PROVIDER_VERSION, "subdomainDelegationSupported": False})
        elif path == "/tokens/infer_access_token_scope" and method == "POST":
            try:
                body = json.loads(self.read_body() or b"{}")
            except ValueError:
                raise ApiError(400, {"id": "badMessage", "description": "Message could not be understood by the server."}) from None
            token = body.get("token")
            if not token:
                raise ApiError(400, {"id": "missingRequiredValue", "details": {"key": "token"},
                                     "description": "Missing required value: \"token\"."})
            try:
                self.check_token(token)
            except ApiError:
                raise ApiError(400, {"id": "badValueToken", "details": {"key": "token", "tokenError": TOKEN_INVALID},
                                     "description": "Bad value: provided \"token\" is not a valid token (Provided token is not valid.)."}) from None
            domain = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
            with store.lock:
                until = store.tokens.get(token)
            self.send(200, {
                "validUntil": int(until) if until else None,
                "dataAccessScope": {
                    "readonly": False,
                    "spaces": {sid: {"name": name, "supports": {store.provider_id: {"readonly": False}}}
                               for sid, name in store.spaces.items()},
                    "providers": {store.provider_id: {"name": "nbplugins-test-provider", "domain": domain,
                                                      "version": PROVIDER_VERSION, "online": True}},
                },
            })
        elif path == "/user/tokens/temporary" and method == "POST":
            self.mint_temporary()
        elif path == "/user" and method == "GET":
            self.authenticate()
            self.send(200, {"userId": "user-nbplugins", "fullName": "nbplugins test user", "username": None})
        else:
            raise not_found()

    def mint_temporary(self) -> None:
        store = self.store
        presented = self.presented_token()
        subject = self.check_idp_token(presented)
        try:
            body = json.loads(self.read_body() or b"{}")
        except ValueError:
            raise ApiError(400, {"id": "badMessage", "description": "Message could not be understood by the server."}) from None
        token_type = body.get("type") or {"accessToken": {}}
        if not isinstance(token_type, dict) or "accessToken" not in token_type:
            raise ApiError(400, {"id": "badValueTokenType", "details": {"key": "type"},
                                 "description": "Bad value: provided \"type\" is not a valid token type."})
        caveats = body.get("caveats") or []
        until = None
        for caveat in caveats if isinstance(caveats, list) else []:
            if isinstance(caveat, dict) and caveat.get("type") == "time":
                until = caveat.get("validUntil")
        if not isinstance(until, int):
            raise ApiError(400, {"id": "tokenTimeCaveatRequired", "details": {"maxTtl": store.token_ttl_max},
                                 "description": "You must specify a time caveat with maximum TTL of "
                                                f"{store.token_ttl_max} seconds to create a temporary token."})
        if until - time.time() > store.token_ttl_max + 5:
            raise ApiError(400, {"id": "tokenTimeCaveatRequired", "details": {"maxTtl": store.token_ttl_max},
                                 "description": "You must specify a time caveat with maximum TTL of "
                                                f"{store.token_ttl_max} seconds to create a temporary token."})
        token = "MDAx" + base64.urlsafe_b64encode(pysecrets.token_bytes(48)).decode().rstrip("=")
        with store.lock:
            store.tokens[token] = float(until)
            store.minted_for.append(subject)
        self.send(201, {"token": token})

    def check_idp_token(self, presented: str | None) -> str:
        """Onezone accepts ``<idp>:<IdP access token>``; we accept unexpired EGI-issued JWTs."""
        if not presented:
            raise unauthorized(None)
        if ":" not in presented or presented.startswith("MDAx"):
            self.check_token(presented)  # an Onedata token may mint too
            return "onedata-token-user"
        idp, idp_token = presented.split(":", 1)
        refused = unauthorized({"id": "badIdpAccessToken", "details": {"idp": idp},
                                "description": f"Provided access token issued by '{idp}' identity provider is not valid."})
        if idp != "egi":
            raise refused
        claims = decode_jwt(idp_token)
        if claims is None:
            raise refused
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp < time.time():
            raise refused
        if self.store.issuer and claims.get("iss") != self.store.issuer:
            raise refused
        return str(claims.get("sub") or "unknown")

    # ---- Oneprovider

    def oneprovider(self, method: str, path: str) -> None:
        if path == "/configuration" and method == "GET":
            self.send(200, {"providerId": self.store.provider_id, "name": "nbplugins-test-provider",
                            "domain": self.headers.get("Host", ""), "version": PROVIDER_VERSION,
                            "onezoneDomain": self.headers.get("Host", ""), "compatibleOnezoneVersions": [PROVIDER_VERSION]})
            return
        self.authenticate()
        if path.startswith("/lookup-file-id/") and method == "POST":
            rel = urllib.parse.unquote(path[len("/lookup-file-id/"):])
            sid, rel = self.store.resolve_path(rel)
            self.read_body()
            self.send(200, {"fileId": self.store.file_id(sid, rel)})
            return
        if path == "/spaces" and method == "GET":
            self.send(200, [{"spaceId": sid, "name": name} for sid, name in self.store.spaces.items()])
            return
        m = re.fullmatch(r"/data/([^/]+)(/content|/children|/path(?:/.*)?)?", path)
        if not m:
            raise not_found()
        fid = urllib.parse.unquote(m.group(1))
        aspect = m.group(2) or ""
        if aspect == "":
            self.data_instance(method, fid)
        elif aspect == "/content":
            self.data_content(method, fid)
        elif aspect == "/children":
            if method != "GET":
                raise ApiError(405 if method != "POST" else 400, {"id": "notSupported", "description": "Operation not supported."})
            self.data_children(fid)
        else:
            tail = urllib.parse.unquote(aspect[len("/path"):]).strip("/")
            self.data_path(method, fid, tail)

    def requested_attributes(self, default: list[str]) -> tuple[str, list[str]]:
        body = self.read_body()
        data: dict[str, Any] = {}
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                raise ApiError(400, {"id": "badMessage", "description": "Message could not be understood by the server."}) from None
            if not isinstance(data, dict):
                data = {}
        if "attributes" in self.query:
            return "current", self.query["attributes"]
        if "attributes" in data:
            attrs = data["attributes"]
            return "current", attrs if isinstance(attrs, list) else [attrs]
        if "attribute" in self.query:
            return "deprecated", self.query["attribute"]
        if "attribute" in data:
            attrs = data["attribute"]
            return "deprecated", attrs if isinstance(attrs, list) else [attrs]
        return "default", default

    def data_instance(self, method: str, fid: str) -> None:
        store = self.store
        sid, rel = store.resolve_id(fid)
        if method == "GET":
            generation, requested = self.requested_attributes(DEFAULT_INSTANCE_ATTRS)
            self.send(200, select_attrs(store.attrs(sid, rel), generation, requested))
        elif method == "DELETE":
            self.read_body()
            if rel == "":
                raise posix("eperm")
            self.remove(sid, rel)
            self.send(204)
        elif method == "PUT":
            try:
                data = json.loads(self.read_body() or b"{}")
            except ValueError:
                raise ApiError(400, {"id": "badMessage", "description": "Message could not be understood by the server."}) from None
            mode = data.get("mode", data.get("posixPermissions"))
            if mode is None:
                raise ApiError(400, {"id": "missingRequiredValue", "details": {"key": "mode"},
                                     "description": "Missing required value: \"mode\"."})
            os.chmod(store.disk(sid, rel), int(str(mode), 8))
            self.send(204)
        else:
            raise ApiError(405, {"id": "notSupported", "description": "Operation not supported."})

    def remove(self, sid: str, rel: str) -> None:
        path = self.store.disk(sid, rel)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        self.store.forget(sid, rel)

    def data_content(self, method: str, fid: str) -> None:
        store = self.store
        sid, rel = store.resolve_id(fid)
        path = store.disk(sid, rel)
        if method in ("GET", "HEAD"):
            self.read_body()
            if path.is_dir():
                self.send(302, None, {"Location": f"https://{self.headers.get('Host')}/download/{pysecrets.token_hex(8)}"})
                return
            self.send_file(path)
        elif method == "PUT":
            if path.is_dir():
                self.read_body()
                raise posix("eisdir")
            offset = self.int_param("offset", None)
            self.write_body(path, offset)
            self.send(204)
        else:
            raise ApiError(405, {"id": "notSupported", "description": "Operation not supported."})

    def int_param(self, key: str, default: int | None) -> int | None:
        values = self.query.get(key)
        if not values:
            return default
        try:
            value = int(values[0])
        except ValueError:
            raise bad_value(key, f"Bad value: provided \"{key}\" must be an integer.", "badValueInteger") from None
        if value < 0:
            raise ApiError(400, {"id": "badValueTooLow", "details": {"key": key, "limit": 0},
                                 "description": f"Bad value: provided \"{key}\" must be at least 0."})
        return value

    def write_body(self, path: Path, offset: int | None) -> None:
        """Stream the request body into ``path``: no offset truncates first (op-worker)."""
        length = self.headers.get("Content-Length")
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        with open(path, "r+b" if path.exists() else "w+b") as handle:
            if offset is None:
                handle.truncate(0)
                offset = 0
            handle.seek(offset)
            if chunked:
                handle.write(self.read_body())
            else:
                remaining = int(length or 0)
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    handle.write(chunk)
                    remaining -= len(chunk)
                self._body = b""

    def send_file(self, path: Path) -> None:
        size = path.stat().st_size
        header = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        extra: dict[str, str] = {"Accept-Ranges": "bytes"}
        if header:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise ApiError(416, {"id": "badValue", "details": {"key": "range"}, "description": "Invalid range."},
                               {"Content-Range": f"bytes */{size}"})
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start = max(0, size - int(m.group(2)))
            if start >= size or start > end:
                raise ApiError(416, {"id": "badValue", "details": {"key": "range"}, "description": "Invalid range."},
                               {"Content-Range": f"bytes */{size}"})
            status = 206
            extra["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(0, end - start + 1)
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def data_children(self, fid: str) -> None:
        store = self.store
        sid, rel = store.resolve_id(fid)
        path = store.disk(sid, rel)
        limit = self.int_param("limit", DEFAULT_LIST)
        if limit is None or limit < 1 or limit > MAX_LIST:
            raise ApiError(400, {"id": "badValueNotInRange", "details": {"key": "limit", "low": 1, "high": MAX_LIST},
                                 "description": f"Bad value: provided \"limit\" must be between 1 and {MAX_LIST}."})
        generation, requested = self.requested_attributes(DEFAULT_CHILD_ATTRS)
        if not path.is_dir():
            # listing a regular file returns the file itself (op-worker get_children_attrs on a file)
            entry = select_attrs(store.attrs(sid, rel), generation, requested)
            self.send(200, {"children": [entry], "isLast": True, "nextPageToken": None})
            return
        names = sorted(os.listdir(path))
        token = (self.query.get("token") or [None])[0]
        if token == "":
            raise ApiError(400, {"id": "badValueEmpty", "details": {"key": "token"},
                                 "description": "Bad value: provided \"token\" must not be empty."})
        if token:
            try:
                after = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["after"]
            except Exception:
                raise bad_value("token", "Bad value: provided \"token\" is not a valid pagination token.") from None
            names = [n for n in names if n > after]
        page, rest = names[:limit], names[limit:]
        children = []
        for name in page:
            child_rel = f"{rel}/{name}" if rel else name
            try:
                children.append(select_attrs(store.attrs(sid, child_rel), generation, requested))
            except FileNotFoundError:
                continue
        is_last = not rest
        next_token = None
        if not is_last:
            next_token = base64.urlsafe_b64encode(json.dumps({"after": page[-1]}).encode()).decode().rstrip("=")
        self.send(200, {"children": children, "isLast": is_last, "nextPageToken": next_token})

    def data_path(self, method: str, fid: str, tail: str) -> None:
        store = self.store
        sid, base = store.resolve_id(fid)
        check_rel(tail)
        rel = "/".join(p for p in [base, tail] if p)
        if method in ("GET", "DELETE"):
            if not store.disk(sid, rel).exists():
                self.read_body()
                raise posix("enoent")
            if method == "GET":
                self.read_body()
                if store.disk(sid, rel).is_dir():
                    self.send(302, None, {"Location": f"https://{self.headers.get('Host')}/download/{pysecrets.token_hex(8)}"})
                    return
                self.send_file(store.disk(sid, rel))
            else:
                self.read_body()
                self.remove(sid, rel)
                self.send(204)
            return
        if method != "PUT":
            raise ApiError(405, {"id": "notSupported", "description": "Operation not supported."})
        if not tail:
            self.read_body()
            raise posix("eexist")
        kind = (self.query.get("type") or ["REG"])[0]
        if kind not in ("REG", "DIR", "LNK", "SYMLNK"):
            self.read_body()
            raise ApiError(400, {"id": "badValueNotAllowed", "details": {"key": "type", "allowed": ["REG", "DIR", "LNK", "SYMLNK"]},
                                 "description": "Bad value: provided \"type\" must be one of: REG, DIR, LNK, SYMLNK."})
        if kind in ("LNK", "SYMLNK"):
            self.read_body()
            raise ApiError(501, {"id": "notImplemented", "description": "This operation is not implemented (test server)."})
        parents = (self.query.get("create_parents") or ["true"])[0].lower() != "false"
        offset = self.int_param("offset", 0)
        mode = (self.query.get("mode") or [None])[0]
        parent_rel, _, name = rel.rpartition("/")
        parent = store.disk(sid, parent_rel)
        if not parent.exists():
            if not parents:
                self.read_body()
                raise posix("enoent")
            for i in range(len(parent_rel.split("/"))):
                step = store.disk(sid, "/".join(parent_rel.split("/")[: i + 1]))
                if step.exists() and not step.is_dir():
                    self.read_body()
                    raise posix("enotdir")
            parent.mkdir(parents=True, exist_ok=True)
        elif not parent.is_dir():
            self.read_body()
            raise posix("enotdir")
        target = store.disk(sid, rel)
        with store.lock:
            if target.exists():
                self.read_body()
                raise posix("eexist")
            if kind == "DIR":
                target.mkdir()
            else:
                target.touch()
        if mode:
            os.chmod(target, int(mode, 8))
        if kind == "REG":
            has_body = int(self.headers.get("Content-Length") or 0) > 0 or \
                self.headers.get("Transfer-Encoding", "").lower() == "chunked"
            if has_body or offset:
                try:
                    self.write_body(target, offset)
                except Exception:
                    target.unlink(missing_ok=True)  # op-worker unlinks a file whose body failed
                    raise
        else:
            self.read_body()
        fid = store.file_id(sid, rel)
        self.send(201, {"fileId": fid}, {"Location": f"/api/v3/oneprovider/data/{fid}"})

    # ---- CDMI

    def cdmi(self, method: str, raw: str) -> None:
        self.authenticate()
        if self.headers.get("X-CDMI-Specification-Version") is None:
            self.read_body()
            raise ApiError(400, {"id": "badValue", "details": {"key": "X-CDMI-Specification-Version"},
                                 "description": "Test server: only CDMI requests (move) are supported."})
        if method != "PUT":
            raise ApiError(405, {"id": "notSupported", "description": "Operation not supported."})
        store = self.store
        path = urllib.parse.unquote(raw)
        container = path.endswith("/")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if container != (content_type == "application/cdmi-container"):
            self.read_body()
            raise ApiError(400, {"id": "badValue", "details": {"key": "path"},
                                 "description": "Bad value: wrong path for this CDMI object type."})
        try:
            body = json.loads(self.read_body() or b"{}")
        except ValueError:
            raise ApiError(400, {"id": "badMessage", "description": "Message could not be understood by the server."}) from None
        dst_sid, dst_rel = store.split_path(path, "eperm")
        target = store.disk(dst_sid, dst_rel)
        move = body.get("move")
        copy = body.get("copy")
        if move is None and copy is not None:
            src_sid, src_rel = store.resolve_path(str(copy))
            if target.exists():
                raise posix("eexist")
            if not target.parent.is_dir():
                raise posix("enoent")
            source = store.disk(src_sid, src_rel)
            if container != source.is_dir():
                raise posix("enotdir" if container else "eisdir")
            if container:
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)
            self.send(201, self.cdmi_answer(dst_sid, dst_rel, container),
                      content_type="application/cdmi-container" if container else "application/cdmi-object")
            return
        if move is None:
            if container and not target.exists():
                target.mkdir(parents=False)
                self.send(201, self.cdmi_answer(dst_sid, dst_rel, container), content_type="application/cdmi-container")
                return
            raise ApiError(501, {"id": "notImplemented", "description": "This operation is not implemented (test server)."})
        src_sid, src_rel = store.resolve_path(str(move))
        if src_sid != dst_sid:
            raise posix("exdev")
        if src_rel == "":
            raise posix("eperm")
        if target.exists():
            raise posix("eexist")
        if not target.parent.is_dir():
            raise posix("enoent")
        if container != store.disk(src_sid, src_rel).is_dir():
            raise posix("enotdir" if container else "eisdir")
        if container and (dst_rel + "/").startswith(src_rel + "/"):
            raise posix("einval")
        with store.lock:
            os.rename(store.disk(src_sid, src_rel), target)
            store.renamed(src_sid, src_rel, dst_rel)
        self.send(201, self.cdmi_answer(dst_sid, dst_rel, container),
                  content_type="application/cdmi-container" if container else "application/cdmi-object")

    def cdmi_answer(self, sid: str, rel: str, container: bool) -> dict[str, Any]:
        store = self.store
        name = rel.rsplit("/", 1)[-1] + ("/" if container else "")
        parent_rel = rel.rsplit("/", 1)[0] if "/" in rel else ""
        return {
            "objectType": "application/cdmi-container" if container else "application/cdmi-object",
            "objectID": store.file_id(sid, rel), "objectName": name,
            "parentURI": "/" + "/".join(filter(None, [store.spaces[sid], parent_rel])) + "/",
            "parentID": store.file_id(sid, parent_rel),
            "capabilitiesURI": "cdmi_capabilities/container/" if container else "cdmi_capabilities/dataobject/",
            "completionStatus": "Complete", "metadata": {}, **({} if container else {"mimetype": "application/octet-stream"}),
        }


def decode_jwt(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except Exception:
        return None
    return claims if isinstance(claims, dict) else None


# ----------------------------------------------------------------------------- main


def serve(port: int, root: Path, spaces: list[str], tokens: list[str], oneclient_tokens: list[str],
          issuer: str | None, token_ttl_max: int, state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    cert, key = make_certificate(state_dir)
    store = Store(root, spaces, tokens, oneclient_tokens, issuer, token_ttl_max)
    handler = type("BoundHandler", (Handler,), {"store": store})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    (state_dir / "ready").write_text(json.dumps({"port": port, "spaces": store.spaces, "provider": store.provider_id}))
    print(f"Onedata test server on https://127.0.0.1:{port} (spaces: {', '.join(spaces)})", flush=True)
    httpd.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True, help="directory holding the spaces' data")
    parser.add_argument("--state", type=Path, help="where cert.pem and ready go (default: ROOT/.state)")
    parser.add_argument("--space", action="append", default=[], help="space name (repeatable)")
    parser.add_argument("--issuer", default="https://aai.egi.eu/auth/realms/egi",
                        help="issuer whose JWTs may mint Onedata tokens ('' = any)")
    parser.add_argument("--token-ttl-max", type=int, default=7 * 24 * 3600)
    args = parser.parse_args(argv)
    # tokens come through the environment so they never show in a process listing
    tokens = [t for t in os.environ.get("ONEDATA_TEST_TOKENS", "").split(",") if t]
    oneclient = [t for t in os.environ.get("ONEDATA_TEST_ONECLIENT_TOKENS", "").split(",") if t]
    root = args.root
    data = root / "spaces"
    data.mkdir(parents=True, exist_ok=True)
    serve(args.port, data, args.space or ["space1"], tokens, oneclient, args.issuer or None,
          args.token_ttl_max, args.state or root / "state")


if __name__ == "__main__":
    main()
