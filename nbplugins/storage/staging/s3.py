"""S3 as either side of a transfer: listings spread over folders, ranged GETs, single PUTs or resumable
multipart uploads, each atomic at the final key.

The endpoint owns its client for the transfer: the direct wire (:mod:`nbplugins.storage.s3wire`)
when the profile has static keys and no proxy, else a botocore client whose uploads carry
``Content-MD5``; both are closed when the transfer ends.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nbplugins import config, files
from nbplugins.errors import StorageError, TransientError
from nbplugins.retry import Retry, describe
from nbplugins.storage import Location, s3wire
from nbplugins.storage.s3 import storage_error
from nbplugins.storage.staging.checksums import (
    CHUNK,
    ChecksumMismatch,
    PartHash,
    clean_etag,
    etag_of,
    pread_views,
)
from nbplugins.storage.staging.endpoint import Endpoint, guarded
from nbplugins.storage.staging.job import Job
from nbplugins.storage.staging.manifest import MANIFEST
from nbplugins.storage.staging.plan import Entry, Have, Listed, Listing

log = logging.getLogger(__name__)

META_PART_SIZE = "nbplugins-part-size"
MAX_LIST_SPLIT = 64  # top-level folders listed in parallel; more than this: one flat listing
NOT_FOUND = ("404", "NoSuchKey", "NotFound")


def bucket_key(path: str) -> tuple[str, str]:
    """(bucket, key) of an S3 path ``bucket/key``."""
    bucket, _, key = path.partition("/")
    return bucket, key


def _meta_part_size(head: dict[str, Any]) -> int | None:
    part = head.get("Metadata", {}).get(META_PART_SIZE)
    return int(part) if part and part.isdigit() else None


def list_tree(client: Any, bucket: str, prefix: str, hints: set[str], retry: Retry, what: str) -> list[dict[str, Any]]:
    """Every object below ``prefix``, sorted by key: one listing per top-level folder, in parallel.

    A flat listing is one request after another, and a server that computes ETags on the fly
    (``rclone serve s3`` hashes each new object when it is first listed) then hashes the whole
    tree on one core. Listing the top level with ``Delimiter='/'`` and each top-level folder
    on its own (``hints``, e.g. from the manifest, start before the top level answers) gives
    the same objects with the work spread over several requests.
    """

    def pages(sub: str, **extra: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            call = {"Bucket": bucket, "Prefix": sub, **extra, **({"ContinuationToken": token} if token else {})}
            page = guarded(retry, lambda kw=call: client.list_objects_v2(**kw), what)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def flat(sub: str) -> list[dict[str, Any]]:
        return [obj for page in pages(sub) for obj in page.get("Contents", [])]

    def top() -> tuple[list[dict[str, Any]], list[str]]:
        objs, folders = [], []
        for page in pages(prefix, Delimiter="/"):
            objs.extend(page.get("Contents", []))
            folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []) if p.get("Prefix"))
        return objs, folders

    with ThreadPoolExecutor(8, thread_name_prefix="nbp-list") as pool:
        started = {f"{prefix}{h}/": pool.submit(flat, f"{prefix}{h}/") for h in sorted(hints)[:MAX_LIST_SPLIT]}
        objs, folders = top()
        if len(folders) > MAX_LIST_SPLIT:  # many small folders: one flat listing is fewer requests
            for future in started.values():
                future.cancel()
            return flat(prefix)
        for folder in folders:
            if folder not in started:
                started[folder] = pool.submit(flat, folder)
        found = {obj["Key"]: obj for obj in objs}
        for folder, future in started.items():
            if folder in folders:
                found.update((obj["Key"], obj) for obj in future.result())
            else:
                future.cancel()
    return [found[k] for k in sorted(found)]


class S3Endpoint(Endpoint):
    """One bucket/prefix: single PUT for a one-part file, multipart upload otherwise; ranged GETs.

    A multipart upload from a local file is resumable: its upload id is kept in a 0600 state
    file until it completes. When a run stops (Ctrl-C, a killed server, a network gone past
    the deadline), the parts already sent stay on the server; the next run of the same file
    (same size, mtime and part size) lists them and sends only the parts whose MD5 differs.
    An upload whose source changed is aborted and started again.
    """

    min_part_size = 5 * CHUNK  # S3's minimum for every part but the last
    kind = "S3"

    def __init__(self, loc: Location, retry: Retry) -> None:
        super().__init__(loc, retry)
        self.wire: s3wire.ObjectWire | None = s3wire.ObjectWire(loc.s3) if s3wire.usable(loc.s3) else None
        # the wire answers the calls staging makes; else botocore, whose uploads carry Content-MD5
        self.client: Any = self.wire if self.wire is not None else loc.s3.transfer_client()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # -- as a source

    def list(self) -> Listing:
        bucket, key = bucket_key(self.path)
        if key and not key.endswith("/"):
            try:
                head = self.retry.call(lambda: self.client.head_object(Bucket=bucket, Key=key), what=f"HEAD {self.url}")
            except Exception as exc:
                if getattr(exc, "response", {}).get("Error", {}).get("Code") not in NOT_FOUND:
                    raise storage_error(exc, self.url) from None
            else:
                return Listing([Listed(posixpath.basename(key), self.path, head["ContentLength"],
                                       clean_etag(head.get("ETag")), _meta_part_size(head))], False)
        prefix = key if not key or key.endswith("/") else key + "/"
        manifest = self.read_manifest()
        hints = {rel.split("/", 1)[0] for rel in manifest if "/" in rel}
        found = []
        for obj in list_tree(self.client, bucket, prefix, hints, self.retry, f"list {self.url}"):
            rel = obj["Key"][len(prefix):]
            if not rel or rel.endswith("/"):
                continue
            found.append(Listed(rel, f"{bucket}/{obj['Key']}", obj["Size"], clean_etag(obj.get("ETag"))))
        if not found:
            raise StorageError(f"{self.url}: no such object or prefix in bucket {bucket!r}")
        return Listing(found, True, manifest)

    def read(self, path: str, offset: int, length: int) -> Iterator[bytes | memoryview]:
        """Ranged GETs: over the wire (blocks are views of a reused buffer) or botocore."""
        if length == 0:
            return
        bucket, key = bucket_key(path)
        if self.wire is not None:
            yield from self.wire.get(bucket, key, offset, length)
            return
        response = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
        body = response["Body"]
        try:
            if offset and not (response.get("ContentRange") or "").startswith(f"bytes {offset}-"):
                raise StorageError(f"s3://{path}: the server answered {response.get('ContentRange') or 'the whole object'}"
                                   f" to a request for bytes {offset}-{offset + length - 1}")
            got = 0
            while got < length:
                block = body.read(min(CHUNK, length - got))
                if not block:
                    raise TransientError(f"s3://{path}: connection closed after {got} of {length} bytes")
                got += len(block)
                yield block
        finally:
            body.close()

    def read_file(self, path: str) -> bytes:
        bucket, key = bucket_key(path)
        return self.retry.call(lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"].read(),
                               what=f"read {MANIFEST}")

    # -- as a destination

    def check_dir(self, src_url: str) -> None:
        bucket, _ = bucket_key(self.path)
        guarded(self.retry, lambda: self.client.head_bucket(Bucket=bucket), f"bucket s3://{bucket}")

    def existing(self, entries: list[Entry]) -> dict[str, Have]:
        bucket, key = bucket_key(self.path)
        out: dict[str, Have] = {}
        if len(entries) == 1 and not self.url.endswith("/"):
            with contextlib.suppress(Exception):
                head = self.client.head_object(Bucket=bucket, Key=bucket_key(entries[0].dest)[1])
                out[entries[0].dest] = (head["ContentLength"], clean_etag(head.get("ETag")), _meta_part_size(head))
            return out
        prefix = key.rstrip("/") + "/" if key else ""
        hints = {e.rel.split("/", 1)[0] for e in entries if "/" in e.rel}
        for obj in list_tree(self.client, bucket, prefix, hints, self.retry, f"list {self.url}"):
            out[f"{bucket}/{obj['Key']}"] = (obj["Size"], clean_etag(obj.get("ETag")), None)
        return out

    def files_below(self, have: dict[str, Have]) -> list[str]:
        return list(have)

    def remove(self, path: str) -> None:
        bucket, key = bucket_key(path)
        self.client.delete_object(Bucket=bucket, Key=key)

    def open(self, job: Job) -> None:
        if job.parts == 1:
            return
        bucket, key = bucket_key(job.entry.dest)
        if self._resume(job, bucket, key):
            return
        response = guarded(self.retry, lambda: self.client.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata={META_PART_SIZE: str(job.part_size)}),
            f"start upload of s3://{job.entry.dest}")
        job.handle = response["UploadId"]
        source = self._source_stamp(job)
        if source is not None:
            files.write_atomic(self._state_path(job), json.dumps(
                {"upload_id": job.handle, "part_size": job.part_size, **source}))

    def write_part(self, job: Job, index: int, source: Endpoint, hashes: PartHash) -> None:
        offset, length = job.part_range(index)
        local = source.local_file(job.entry.src)
        if local is not None and self.wire is not None:  # hashed through one reused buffer, sent by the kernel
            fd = os.open(local, os.O_RDONLY)
            try:
                for view in pread_views(fd, offset, length, f"{local}: file shrank while it was being sent"):
                    hashes.update(view)
                self._put(job, index, hashes.digest(), (fd, offset, length))
            finally:
                os.close(fd)
            return
        blocks = [b if isinstance(b, bytes) else bytes(b) for b in source.read(job.entry.src, offset, length)]
        data = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        if len(data) != length:
            raise TransientError(f"{job.what(index)}: read {len(data)} of {length} bytes")
        hashes.update(data)
        self._put(job, index, hashes.digest(), data)

    def _put(self, job: Job, index: int, digest: bytes, body: bytes | tuple[int, int, int]) -> None:
        """PUT one part (or the one-part object) unless a resumed upload has it: ``body`` is bytes or (fd, offset, length)."""
        if self._already_there(job, index, digest):
            return
        bucket, key = bucket_key(job.entry.dest)
        md5 = base64.b64encode(digest).decode()
        upload = {"upload_id": job.handle, "part_number": index + 1} if job.parts > 1 else {}
        if isinstance(body, tuple):
            assert self.wire is not None
            raw = self.wire.put_file(bucket, key, *body, md5, **upload)
        elif self.wire is not None:
            raw = self.wire.put(bucket, key, body, md5, **upload)
        elif upload:
            raw = self.client.upload_part(Bucket=bucket, Key=key, UploadId=job.handle, PartNumber=index + 1,
                                          Body=body, ContentMD5=md5).get("ETag")
        else:
            raw = self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5).get("ETag")
        self._check_etag(job, index, raw, digest)

    def _check_etag(self, job: Job, index: int, raw: str | None, digest: bytes) -> None:
        etag = clean_etag(raw)
        if etag and "-" not in etag and etag != digest.hex():
            raise ChecksumMismatch(f"s3://{job.entry.dest} part {index + 1}: server stored MD5 {etag}, "
                                   f"sent {digest.hex()}")
        job.etags[index] = raw

    def commit(self, job: Job) -> str | None:
        if job.parts == 1:
            return None
        bucket, key = bucket_key(job.entry.dest)
        parts = [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(job.etags)]
        tries = 0

        def complete() -> dict[str, Any]:
            nonlocal tries
            tries += 1
            try:
                return self.client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=job.handle, MultipartUpload={"Parts": parts})
            except Exception as exc:
                # an earlier attempt completed it and its answer was lost (a cut connection)
                if tries > 1 and getattr(exc, "response", {}).get("Error", {}).get("Code") == "NoSuchUpload":
                    head = self.client.head_object(Bucket=bucket, Key=key)
                    if self._is_ours(job, head):
                        return head
                raise

        response = guarded(self.retry, complete, f"complete upload of s3://{job.entry.dest}")
        job.handle = None
        self._forget(job)
        return clean_etag(response.get("ETag"))

    @staticmethod
    def _is_ours(job: Job, head: dict[str, Any]) -> bool:
        """True when the object ``head`` describes holds ``job``'s bytes: the multipart ETag our parts'
        MD5s make, or (servers that answer a plain MD5, as rclone does) the MD5 of the local source."""
        etag = clean_etag(head.get("ETag"))
        if not etag or head.get("ContentLength") != job.entry.size:
            return False
        if "-" in etag:
            return etag == etag_of([d for d in job.digests if d])
        if job.reread is None:  # not a local source: nothing cheap to compare with
            return False
        whole = hashlib.md5()
        for block in job.reread(0, job.entry.size):
            whole.update(block)
        return whole.hexdigest() == etag

    def abort(self, job: Job) -> None:
        if job.handle:
            bucket, key = bucket_key(job.entry.dest)
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=job.handle)
            job.handle = None
            self._forget(job)

    def release(self, job: Job) -> None:
        """Leave an unfinished upload for the next run when it can resume it, else abort it."""
        if job.handle and job.parts > 1 and os.path.exists(self._state_path(job)):
            job.handle = None
            return
        self.abort(job)

    def write_manifest(self, path: str, body: bytes) -> None:
        bucket, key = bucket_key(path)
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        guarded(self.retry, lambda: self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5,
                                                           ContentType="application/json"),
                f"write s3://{path}")

    # -- resumable uploads

    def _state_path(self, job: Job) -> str:
        where = f"{self.loc.s3.endpoint_url or 'aws'}|{job.entry.dest}"
        return str(config.cache_root() / "uploads" / f"{hashlib.sha256(where.encode()).hexdigest()[:32]}.json")

    @staticmethod
    def _source_stamp(job: Job) -> dict[str, Any] | None:
        """What identifies the source file's content cheaply (local files only)."""
        try:
            st = os.stat(job.entry.src)
        except (OSError, TypeError):
            return None
        return {"src": os.path.realpath(job.entry.src), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _resume(self, job: Job, bucket: str, key: str) -> bool:
        """Take over an earlier run's upload of this very file, if there is one; True if taken."""
        path = self._state_path(job)
        try:
            with open(path) as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            return False
        stamp = self._source_stamp(job)
        upload_id = state.get("upload_id") if isinstance(state, dict) else None
        same = (stamp is not None and isinstance(upload_id, str) and state.get("part_size") == job.part_size
                and all(state.get(k) == v for k, v in stamp.items()))
        if same:
            try:
                job.resumed = self._uploaded_parts(bucket, key, upload_id)
                job.handle = upload_id
                log.info("resuming the upload of %s: %d of %d parts already there", job.entry.rel,
                         len(job.resumed), job.parts)
                return True
            except Exception as exc:  # noqa: BLE001 - gone or refused: start a new upload
                log.info("cannot resume the upload of %s (%s); starting again", job.entry.rel, describe(exc))
        elif isinstance(upload_id, str):
            with contextlib.suppress(Exception):  # the file changed: its old parts are of no use
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return False

    def _uploaded_parts(self, bucket: str, key: str, upload_id: str) -> dict[int, str]:
        parts: dict[int, str] = {}
        marker: int | None = None
        while True:
            page = self.retry.call(lambda m=marker: self.client.list_parts(
                Bucket=bucket, Key=key, UploadId=upload_id, **({"PartNumberMarker": m} if m else {})),
                what=f"list uploaded parts of s3://{bucket}/{key}")
            parts.update((p["PartNumber"], p["ETag"]) for p in page.get("Parts", []))
            marker = page.get("NextPartNumberMarker")
            if not page.get("IsTruncated") or not marker:
                return parts

    def _already_there(self, job: Job, index: int, digest: bytes) -> bool:
        """True when a resumed upload already holds this part with this MD5 (then it is not sent)."""
        raw = job.resumed.get(index + 1)
        if raw and clean_etag(raw) == digest.hex():
            job.etags[index] = raw
            return True
        return False

    def _forget(self, job: Job) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._state_path(job))
