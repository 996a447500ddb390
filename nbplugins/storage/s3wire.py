"""S3 for staging on the wire: the few calls a transfer makes, SigV4-signed, over keep-alive
connections held per thread.

botocore spends 2-4 ms of CPU on every request (endpoint rules, event hooks, a copy of each
body block) and 0.4 s to import and build a client; with hundreds of small objects on a
2-core notebook that is most of a transfer's client CPU, and it competes with the S3 server
when both share the machine. :class:`ObjectWire` answers the subset of botocore's client
interface staging uses (same keyword arguments, same response keys), plus :meth:`ObjectWire.get`
and :meth:`ObjectWire.put` for bodies without copies. Requests are signed as AWS specifies
(checked against AWS's published examples and the real servers in the tests); bodies are
``UNSIGNED-PAYLOAD`` under a signed ``Content-MD5`` that the server checks. Failures raise
:class:`S3Error`, shaped like botocore's ``ClientError`` (``.response``), so one mapping
(retry predicate, messages) serves both paths.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import hmac
import http.client
import io
import os
import re
import socket
import ssl
import struct
import threading
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from nbplugins.errors import StorageError, TransientError
from nbplugins.retry import describe
from nbplugins.storage.s3 import S3Settings

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
BLOCK = 1 << 20
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_ERROR_FIELD = re.compile(rb"<(Code|Message)>([^<]*)</\1>")
#: Bodies are read in blocking mode with SO_RCVTIMEO (a struct timeval) and MSG_WAITALL: POSIX only.
DIRECT_READS = os.name == "posix" and hasattr(socket, "MSG_WAITALL")


class S3Error(Exception):
    """An S3 error answer; ``response`` has botocore's ``ClientError`` shape (Error.Code, HTTPStatusCode)."""

    def __init__(self, code: str, message: str, status: int, operation: str, headers: dict[str, str]) -> None:
        super().__init__(f"An error occurred ({code}) when calling the {operation} operation: {message}")
        self.response = {"Error": {"Code": code, "Message": message},
                         "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers}}
        self.operation_name = operation


class Signer:
    """AWS Signature Version 4 for S3 requests (header form); the signing key is kept per day."""

    def __init__(self, access_key: str, secret_key: str, region: str, session_token: str | None = None,
                 service: str = "s3") -> None:
        self._access = access_key
        self._secret = secret_key
        self._token = session_token
        self._scope_tail = f"{region}/{service}/aws4_request"
        self._region, self._service = region, service
        self._key: tuple[str, bytes] | None = None

    def _signing_key(self, day: str) -> bytes:
        if self._key is None or self._key[0] != day:
            key = ("AWS4" + self._secret).encode()
            for part in (day, self._region, self._service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key = (day, key)
        return self._key[1]

    def sign(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], *,
             payload_hash: str = UNSIGNED_PAYLOAD, now: _dt.datetime | None = None) -> dict[str, str]:
        """Add ``x-amz-date``, ``x-amz-content-sha256``, the session token and ``Authorization`` to ``headers``.

        ``path`` is the already URI-encoded request path; ``headers`` must include ``host``.
        """
        stamp = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
        headers = {**headers, "x-amz-date": stamp, "x-amz-content-sha256": payload_hash}
        if self._token:
            headers["x-amz-security-token"] = self._token
        canonical = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
        names = sorted(canonical)
        signed = ";".join(names)
        request = "\n".join([
            method, path, canonical_query(query),
            "".join(f"{n}:{canonical[n]}\n" for n in names), signed, payload_hash,
        ])
        day = stamp[:8]
        scope = f"{day}/{self._scope_tail}"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self._access}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={signature}")
        return headers


def canonical_query(query: dict[str, str]) -> str:
    """The query string as SigV4 signs it (and as it is sent): each name and value URI-encoded, sorted encoded."""
    return "&".join(f"{k}={v}" for k, v in sorted((quote(k, safe="~"), quote(v, safe="~")) for k, v in query.items()))


def usable(settings: S3Settings) -> bool:
    """True when bodies can go over the wire directly: static keys and no proxy for the endpoint.

    Keys from botocore's own chain (profiles, instance roles) may refresh and proxies need
    botocore's handling; those transfers keep botocore for bodies too.
    """
    if not settings.access_key_id or not settings.secret_access_key or not settings.endpoint_url:
        return False
    parts = urlsplit(settings.endpoint_url)
    proxies = urllib.request.getproxies()
    return not (proxies.get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname or ""))


class ObjectWire:
    """Ranged GETs and single PUTs (objects or multipart parts) for one resolved S3 profile."""

    def __init__(self, settings: S3Settings) -> None:
        assert settings.endpoint_url and settings.access_key_id and settings.secret_access_key
        parts = urlsplit(settings.endpoint_url)
        self.endpoint = settings.endpoint_url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.default_port = self.port == (443 if self.https else 80)
        self.path_style = settings.path_style
        self.connect_timeout, self.read_timeout = settings.connect_timeout, settings.read_timeout
        self.signer = Signer(settings.access_key_id, settings.secret_access_key, settings.region,
                             settings.session_token)
        self.ssl: ssl.SSLContext | None = _ssl_context(settings.verify) if self.https else None
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # -- addressing and connections

    def _where(self, bucket: str, key: str) -> tuple[str, str]:
        """(host, encoded path) of an object, path-style or virtual-hosted as the profile says."""
        encoded = quote(key, safe="/~")
        if not self.path_style and _DNS_BUCKET.match(bucket) and not (self.https and "." in bucket):
            return f"{bucket}.{self.host}", f"{self.base}/{encoded}"
        return self.host, f"{self.base}/{bucket}/{encoded}" if key else f"{self.base}/{bucket}"

    def _connection(self, host: str) -> http.client.HTTPConnection:
        pool = self._local.__dict__.setdefault("pool", {})
        conn = pool.get(host)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(host, self.port, timeout=self.connect_timeout, context=self.ssl)
            else:
                conn = http.client.HTTPConnection(host, self.port, timeout=self.connect_timeout)
            pool[host] = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.connect()
        except ssl.SSLError:
            raise
        except OSError as exc:
            conn.close()
            # imported here, on the failure path only: it brings subprocess and ctypes, a tenth of
            # a get's start-up, for a question asked when a connection is refused
            from nbplugins.sandbox.state import diagnose

            sandbox_down = diagnose(self.endpoint)
            if sandbox_down:  # a sandbox that is down does not come back by retrying
                raise StorageError(sandbox_down) from None
            raise TransientError(f"could not connect to the endpoint {self.endpoint}: {describe(exc)}") from None
        conn.sock.settimeout(self.read_timeout)
        if DIRECT_READS and self.ssl is None and self.read_timeout:  # the timeout of bodies read blocking (_recv_body)
            seconds = float(self.read_timeout)
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 struct.pack("ll", int(seconds), int(seconds % 1 * 1e6)))

    def _drop(self, host: str) -> None:
        conn = self._local.__dict__.get("pool", {}).pop(host, None)
        if conn is not None:
            conn.close()
            with self._lock, contextlib.suppress(ValueError):
                self._all.remove(conn)

    def close(self) -> None:
        """Close every connection this wire opened (from any thread)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()

    def _send(self, method: str, bucket: str, key: str, query: dict[str, str], headers: dict[str, str],
              body: Any = None) -> tuple[str, http.client.HTTPResponse]:
        host, path = self._where(bucket, key)
        host_header = host if self.default_port else f"{host}:{self.port}"
        target = f"{path}?{canonical_query(query)}" if query else path
        for attempt in (0, 1):
            conn = self._connection(host)
            reused = conn.sock is not None
            signed = self.signer.sign(method, path, query, {"host": host_header, **headers})
            try:
                if conn.sock is None:
                    self._connect(conn)
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in signed.items():
                    conn.putheader(name, value)
                if isinstance(body, _FileRange):
                    conn.endheaders()
                    _sendfile(conn, body)
                else:
                    conn.endheaders(body)
                return host, conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                early = _early_answer(conn) if body is not None else None
                if early is not None:  # refused mid-body (wrong keys, no bucket): the answer says why
                    return host, early
                self._drop(host)
                if not reused or attempt:  # a kept-alive socket the server closed: once more on a new one
                    raise exc
            except BaseException:
                self._drop(host)
                raise
        raise AssertionError("unreachable")

    def _fail(self, host: str, response: http.client.HTTPResponse, operation: str, body: bytes | None = None) -> None:
        status = response.status
        if body is None:
            try:
                body = response.read(65536) if status != 304 else b""
            except Exception:  # noqa: BLE001 - the status is what matters
                body = b""
        self._drop(host)
        fields = {name.decode(): value.decode(errors="replace") for name, value in _ERROR_FIELD.findall(body)}
        code = fields.get("Code") or str(status)
        raise S3Error(code, fields.get("Message") or response.reason, status, operation,
                      {k.lower(): v for k, v in response.getheaders()})

    def _call(self, method: str, operation: str, bucket: str, key: str = "", query: dict[str, str] | None = None,
              headers: dict[str, str] | None = None, body: bytes | None = None,
              ok: tuple[int, ...] = (200,)) -> tuple[http.client.HTTPResponse, bytes]:
        """One small request whose whole answer is read: (response, body); an S3 error raises S3Error."""
        headers = dict(headers or {})
        if body is not None:
            headers["content-length"] = str(len(body))
        elif method in ("POST", "PUT"):
            headers["content-length"] = "0"
        host, response = self._send(method, bucket, key, query or {}, headers, body)
        data = response.read()  # (a HEAD answer too: reading it frees the connection for the next request)
        if response.status not in ok or b"<Error>" in data[:512]:  # CompleteMultipartUpload may fail with a 200
            self._fail(host, response, operation, data)
        return response, data

    # -- operations

    def get(self, bucket: str, key: str, offset: int, length: int) -> Iterator[memoryview]:
        """Bytes ``[offset, offset + length)`` of an object, as views of one reused buffer.

        Each view is valid until the next one is asked for: write or copy it first. A server
        that ignores ``Range`` (200 and the whole object) is taken at its word only when the
        whole object is the range asked for; any other answer than that range is refused at
        once (StorageError): no later attempt would get other bytes.
        """
        if length <= 0:
            return
        last = offset + length - 1
        host, response = self._send("GET", bucket, key, {}, {"range": f"bytes={offset}-{last}"})
        if response.status not in (200, 206):
            self._fail(host, response, "GetObject")
        span = response.getheader("Content-Range") or ""
        whole = response.status == 200 and not span  # the server ignored Range: the body is the whole object
        # the range asked for (206, or rclone's 200 with a Content-Range); or a whole object that is that range
        if not (span.startswith(f"bytes {offset}-{last}/") or (whole and offset == 0 and response.length in (length, None))):
            self._drop(host)  # not the bytes asked for: refused at once, not retried to the end of the budget
            raise StorageError(f"s3://{bucket}/{key}: the server answered "
                               f"{span or f'the whole object ({response.length} bytes)'} to a request for bytes "
                               f"{offset}-{last}" + (" (it ignores Range requests)" if whole else ""))
        buf = self._local.__dict__.get("buf")
        if buf is None:
            buf = self._local.buf = memoryview(bytearray(BLOCK))
        conn = self._local.pool.get(host)
        # a plain-HTTP body of known length on a kept-alive connection: read past http.client's reader
        direct = (DIRECT_READS and self.ssl is None and conn is not None and conn.sock is not None
                  and response.length == length and not response.chunked and not response.will_close)
        got = 0
        try:
            if direct:  # straight from the socket into the buffer, one recv per block
                got = yield from self._recv_body(response, conn.sock, buf, length, f"s3://{bucket}/{key}")
                return
            while got < length:
                n = response.readinto(buf[:min(BLOCK, length - got)])
                if not n:
                    raise http.client.IncompleteRead(b"", length - got)
                got += n
                yield buf[:n]
            if response.read(1):
                if whole:  # (no Content-Length said so up front)
                    raise StorageError(f"s3://{bucket}/{key}: the server ignores Range requests and sent more than "
                                       f"bytes {offset}-{last}")
                raise http.client.IncompleteRead(b"", 0)
        finally:
            if got < length or not response.isclosed():
                self._drop(host)  # body not drained: the connection cannot be reused

    def _recv_body(self, response: http.client.HTTPResponse, sock: socket.socket, buf: memoryview, length: int,
                   what: str) -> Iterator[memoryview]:
        """The ``length`` bytes of a plain-HTTP body as full blocks of ``buf``; returns how many were read.

        ``http.client`` reads a body through a buffered reader over a socket in timeout mode:
        a ``poll`` before every ``recv``, each ``recv`` taking what has arrived (tens of KiB
        on loopback), and the GIL dropped and taken back around each. Here the bytes the
        reader already holds are taken first, then the socket, blocking for once, fills each
        block in one ``recv(MSG_WAITALL)``; ``SO_RCVTIMEO`` (set at connect) keeps the read
        timeout. The response is then closed, which leaves the connection ready for the next
        request as reading it to its end would.
        """
        held = min(len(response.fp.peek()), length) if response.fp is not None else 0  # already buffered
        got = 0
        sock.settimeout(None)
        try:
            while got < length:
                size, filled = min(BLOCK, length - got), 0
                while filled < size:
                    if held:  # (in order: the reader's bytes come before the socket's)
                        n = response.readinto(buf[filled:filled + min(held, size - filled)])
                        held -= n
                    else:
                        try:
                            n = sock.recv_into(buf[filled:size], size - filled, socket.MSG_WAITALL)
                        except BlockingIOError:  # SO_RCVTIMEO ran out with nothing received
                            raise TimeoutError(f"{what}: no data for {self.read_timeout} s") from None
                    if not n:
                        raise http.client.IncompleteRead(b"", length - got - filled)
                    filled += n
                got += size
                yield buf[:size]
        finally:
            if sock.fileno() >= 0:
                sock.settimeout(self.read_timeout)
        response.close()  # every byte is read: the connection is free for the next request (its socket stays open)
        return got

    def put(self, bucket: str, key: str, body: bytes | memoryview, content_md5: str, *,
            upload_id: str | None = None, part_number: int | None = None, content_type: str | None = None) -> str:
        """PUT an object, or one part of a multipart upload; returns the ETag the server gave."""
        query = {"partNumber": str(part_number), "uploadId": upload_id} if upload_id else {}
        headers = {"content-md5": content_md5, **({"content-type": content_type} if content_type else {})}
        response, _ = self._call("PUT", "UploadPart" if upload_id else "PutObject", bucket, key, query, headers,
                                 bytes(body) if isinstance(body, memoryview) else body)
        return response.getheader("ETag") or ""

    def put_file(self, bucket: str, key: str, fd: int, offset: int, length: int, content_md5: str, *,
                 upload_id: str | None = None, part_number: int | None = None) -> str:
        """PUT ``length`` bytes of an open file from ``offset`` (an object or a part), sent by the kernel.

        ``socket.sendfile`` moves the bytes from the page cache to the socket without passing
        through Python, so a part costs no memory whatever its size. The server checks them
        against ``content_md5``: a file changed since it was hashed is refused (BadDigest).
        """
        query = {"partNumber": str(part_number), "uploadId": upload_id} if upload_id else {}
        headers = {"content-md5": content_md5, "content-length": str(length)}
        host, response = self._send("PUT", bucket, key, query, headers, _FileRange(fd, offset, length))
        data = response.read()
        if response.status != 200:
            self._fail(host, response, "UploadPart" if upload_id else "PutObject", data)
        return response.getheader("ETag") or ""

    # -- the subset of botocore's S3 client that staging calls (same arguments, same answer keys)

    def head_bucket(self, *, Bucket: str) -> dict[str, Any]:  # noqa: N803 - botocore's names
        self._call("HEAD", "HeadBucket", Bucket)
        return {}

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        response, _ = self._call("HEAD", "HeadObject", Bucket, Key)
        meta = {k[len("x-amz-meta-"):]: v for k, v in ((k.lower(), v) for k, v in response.getheaders())
                if k.startswith("x-amz-meta-")}
        return {"ContentLength": int(response.getheader("Content-Length") or 0),
                "ETag": response.getheader("ETag") or "", "Metadata": meta}

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        _, data = self._call("GET", "GetObject", Bucket, Key)
        return {"Body": io.BytesIO(data), "ContentLength": len(data)}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentMD5: str,  # noqa: N803
                   ContentType: str | None = None) -> dict[str, Any]:
        return {"ETag": self.put(Bucket, Key, Body, ContentMD5, content_type=ContentType)}

    def list_objects_v2(self, *, Bucket: str, Prefix: str = "", Delimiter: str | None = None,  # noqa: N803
                        ContinuationToken: str | None = None, MaxKeys: int | None = None) -> dict[str, Any]:
        query = {"list-type": "2", "prefix": Prefix, "encoding-type": "url",
                 **({"delimiter": Delimiter} if Delimiter else {}),
                 **({"max-keys": str(MaxKeys)} if MaxKeys else {}),
                 **({"continuation-token": ContinuationToken} if ContinuationToken else {})}
        _, data = self._call("GET", "ListObjectsV2", Bucket, query=query)
        root = _strip_ns(ET.fromstring(data))
        decode = unquote if (root.findtext("EncodingType") or "").lower() == "url" else (lambda v: v)
        contents = [{"Key": decode(c.findtext("Key") or ""), "Size": int(c.findtext("Size") or 0),
                     "ETag": c.findtext("ETag") or ""} for c in root.iter("Contents")]
        prefixes = [{"Prefix": decode(p.findtext("Prefix") or "")} for p in root.iter("CommonPrefixes")]
        out: dict[str, Any] = {"IsTruncated": (root.findtext("IsTruncated") or "").lower() == "true"}
        if contents:
            out["Contents"] = contents
        if prefixes:
            out["CommonPrefixes"] = prefixes
        if root.findtext("NextContinuationToken"):
            out["NextContinuationToken"] = root.findtext("NextContinuationToken")
        return out

    def create_multipart_upload(self, *, Bucket: str, Key: str,  # noqa: N803
                                Metadata: dict[str, str] | None = None) -> dict[str, Any]:
        headers = {f"x-amz-meta-{k}": v for k, v in (Metadata or {}).items()}
        _, data = self._call("POST", "CreateMultipartUpload", Bucket, Key, {"uploads": ""}, headers)
        return {"UploadId": _strip_ns(ET.fromstring(data)).findtext("UploadId") or ""}

    def complete_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str,  # noqa: N803
                                  MultipartUpload: dict[str, Any]) -> dict[str, Any]:
        parts = "".join(f"<Part><PartNumber>{p['PartNumber']}</PartNumber><ETag>{_xml(p['ETag'])}</ETag></Part>"
                        for p in MultipartUpload["Parts"])
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        _, data = self._call("POST", "CompleteMultipartUpload", Bucket, Key, {"uploadId": UploadId},
                             {"content-md5": md5, "content-type": "application/xml"}, body)
        return {"ETag": _strip_ns(ET.fromstring(data)).findtext("ETag") or ""}

    def delete_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        self._call("DELETE", "DeleteObject", Bucket, Key, ok=(200, 204))
        return {}

    def list_parts(self, *, Bucket: str, Key: str, UploadId: str,  # noqa: N803
                   PartNumberMarker: int | None = None) -> dict[str, Any]:
        query = {"uploadId": UploadId, **({"part-number-marker": str(PartNumberMarker)} if PartNumberMarker else {})}
        _, data = self._call("GET", "ListParts", Bucket, Key, query)
        root = _strip_ns(ET.fromstring(data))
        parts = [{"PartNumber": int(p.findtext("PartNumber") or 0), "ETag": p.findtext("ETag") or "",
                  "Size": int(p.findtext("Size") or 0)} for p in root.iter("Part")]
        out: dict[str, Any] = {"Parts": parts, "IsTruncated": (root.findtext("IsTruncated") or "").lower() == "true"}
        if root.findtext("NextPartNumberMarker"):
            out["NextPartNumberMarker"] = int(root.findtext("NextPartNumberMarker") or 0)
        return out

    def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str) -> dict[str, Any]:  # noqa: N803
        self._call("DELETE", "AbortMultipartUpload", Bucket, Key, {"uploadId": UploadId}, ok=(200, 204))
        return {}


class _FileRange:
    """A body that ``http.client`` sends by handing the socket to ``socket.sendfile``."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd, self.offset, self.length = fd, offset, length


def _strip_ns(root: ET.Element) -> ET.Element:
    for element in root.iter():
        element.tag = element.tag.rsplit("}", 1)[-1]
    return root


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _early_answer(conn: http.client.HTTPConnection) -> http.client.HTTPResponse | None:
    """The error a server sent before it stopped reading our body, if it is still readable."""
    try:
        response = conn.getresponse()
    except Exception:  # noqa: BLE001 - nothing readable: the caller reports the send error
        return None
    return response if response.status >= 300 else None


def _sendfile(conn: http.client.HTTPConnection, body: _FileRange) -> None:
    sock = conn.sock
    if isinstance(sock, ssl.SSLSocket):  # TLS is encrypted in user space: plain reads and sends
        pos, end = body.offset, body.offset + body.length
        while pos < end:
            block = os.pread(body.fd, min(BLOCK, end - pos), pos)
            if not block:
                raise http.client.IncompleteRead(b"", end - pos)
            sock.sendall(block)
            pos += len(block)
        return
    if not body.length:
        return
    with os.fdopen(os.dup(body.fd), "rb", buffering=0) as handle:
        sent = sock.sendfile(handle, body.offset, body.length)
    if sent != body.length:
        raise http.client.IncompleteRead(b"", body.length - sent)


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # botocore's own default bundle is certifi's; fall back to the system's
        return ssl.create_default_context()

