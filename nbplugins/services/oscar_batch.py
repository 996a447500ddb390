"""Asynchronous OSCAR runs: N inputs in, N results home, one polling loop for the whole batch.

Files are uploaded to the service's MinIO input path (endpoint and keys from ``/system/config``,
through the storage layer's S3 settings), which starts one job each as MinIO's webhook does;
text or JSON inputs are sent to ``POST /job``. OSCAR names no job in either case, so jobs are
told apart by listing the service's jobs before and after, and by the object names the FaaS
Supervisor logs and writes (``<output path>/<input stem>...``). One :func:`nbplugins.retry.poll`
loop lists jobs and outputs for the whole batch; outputs are downloaded as each input finishes
(:func:`nbplugins.services.results.download`, to a folder, ``s3://`` or ``onedata://``). A failed
input does not stop the others, its job's logs are kept, and a rerun skips inputs whose
results are already at the destination, or whose outputs are already in the output bucket.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbplugins import secrets, storage
from nbplugins.errors import DeadlineExceeded, NbpluginsError, ServiceError, ValidationError
from nbplugins.retry import foreign_as, poll
from nbplugins.services import jobs as jobs_mod
from nbplugins.services.jobs import State
from nbplugins.services.oscar import Oscar, check_inputs
from nbplugins.services.results import RESULTS_FILE, Output, Result, download

log = logging.getLogger(__name__)
#: A value that names a file (no spaces, a folder or an extension): missing, not text to send.
_PATHLIKE = re.compile(r"^[^\s{\[]*(/|\.[A-Za-z][A-Za-z0-9]{0,4}$)[^\s]*$")


@dataclass
class Item:
    """One input of a batch and what became of it."""

    source: str
    stem: str
    dest: str
    key: str = ""  # the input object (bucket/key) for files
    inline: bool = False
    status: str = "waiting"  # waiting, skipped, uploaded, submitted, succeeded, failed
    job: str = ""
    outputs: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    error: str = ""
    logs: str = ""
    seen_outputs: tuple[str, ...] = ()

    @property
    def final(self) -> bool:
        return self.status in ("skipped", "succeeded", "failed")

    def row(self) -> dict[str, Any]:
        """The table row: input, job, status, outputs, duration (and the error, if any)."""
        return {"input": self.source if not self.inline else f"(text {len(self.source)} chars)",
                "job": self.job or "-", "status": self.status,
                "outputs": [r.location for r in self.results] or [o.rsplit("/", 1)[-1] for o in self.outputs],
                "duration": round(self.finished - self.started, 1) if self.started and self.finished else None,
                "error": self.error}


def _join(dest: str, name: str) -> str:
    scheme, _ = storage.split_url(dest)
    return str(Path(dest) / name) if scheme == "file" else f"{dest.rstrip('/')}/{name}"


def _done_before(dest: str) -> bool:
    """Whether ``dest`` already holds a finished result set (its ``results.json``)."""
    target = _join(dest, RESULTS_FILE)
    if storage.split_url(target)[0] == "file":
        return Path(target).is_file()
    try:
        fs, path = storage.filesystem(target)
        return bool(fs.exists(path))
    except (NbpluginsError, OSError):
        return False


def _minio_settings(client: Oscar) -> Any:
    """S3 settings of the cluster's MinIO with this user's keys (registered as secrets)."""
    from nbplugins.storage.s3 import S3Settings

    minio = client.minio()
    endpoint = str(minio["endpoint"])
    if not endpoint.startswith(("http://", "https://")):
        endpoint = "https://" + endpoint
    secrets.register(minio.get("access_key"), "OSCAR MinIO access key")
    secrets.register(minio.get("secret_key"), "OSCAR MinIO secret key")
    verify = minio.get("verify", True)
    return S3Settings(name=f"oscar-{client.cluster.label}", endpoint_url=endpoint,
                      region=minio.get("region") or "us-east-1", access_key_id=minio.get("access_key"),
                      secret_access_key=minio.get("secret_key"), credential_source=f"{client.label} /system/config",
                      verify=verify if isinstance(verify, bool) else True)


def _minio_path(svc: dict[str, Any], key: str) -> tuple[str, str] | None:
    """(bucket, folder) of the service's first MinIO ``input`` or ``output``."""
    for item in svc.get(key) or []:
        provider = str(item.get("storage_provider") or "minio.default")
        if provider.split(".")[0] == "minio":
            bucket, _, folder = str(item.get("path", "")).strip("/").partition("/")
            return bucket, folder.strip("/")
    return None


def _belongs(name: str, stem: str) -> bool:
    """Whether output file ``name`` was made from input ``stem`` (``stem``, ``stem.out``, ``stem_1.png``)."""
    return name == stem or (name.startswith(stem) and name[len(stem)] in "._-")


class Batch:
    """Runs inputs through one OSCAR service asynchronously and brings their outputs home."""

    def __init__(self, client: Oscar, service: str, inputs: list[str], dest: str, *, timeout: float = 3600.0,
                 progress: bool = True, concurrency: int = 4) -> None:
        check_inputs(inputs, files_only=False)
        self.client = client
        self.service = service
        self.timeout = timeout
        self.progress = progress
        self.concurrency = concurrency
        self.items: list[Item] = []
        stems: dict[str, str] = {}
        for n, value in enumerate(inputs):
            path = Path(value)
            is_file = _is_file(value)
            if not is_file and _PATHLIKE.match(value):
                raise ValidationError(f"input {value!r}: no such file (text inputs are sent as they are only when "
                                      "they do not look like a path)")
            stem = path.stem if is_file else f"input-{n + 1}"
            if stem in stems:
                raise ValidationError(f"inputs {stems[stem]!r} and {value!r} share the name {stem!r}: their outputs "
                                      "would overwrite each other; rename one")
            stems[stem] = value
            from nbplugins.paths import safe_component

            folder = safe_component(stem, "input name")
            self.items.append(Item(value, stem, _join(dest, folder), inline=not is_file))
        self.s3: Any = None
        self.bucket_in = self.folder_in = self.bucket_out = self.folder_out = ""
        self.before: set[str] = set()
        self.assigned: set[str] = set()
        self.logs: dict[str, str] = {}
        self.downloads: dict[int, Future[list[Result]]] = {}

    # ------------------------------------------------------------------ storage

    def _call(self, fn: Any, what: str) -> Any:
        from nbplugins.storage.s3 import storage_error

        return self.client.retry.call(fn, what=what, map_error=foreign_as(lambda exc: storage_error(exc, what)))

    def list_outputs(self) -> list[str]:
        """Object keys under the service's output path."""
        if not self.bucket_out:
            return []
        prefix = f"{self.folder_out}/" if self.folder_out else ""

        def listing() -> list[str]:
            keys, token = [], None
            while True:
                kwargs = {"Bucket": self.bucket_out, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
                page = self.s3.list_objects_v2(**kwargs)
                keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
                token = page.get("NextContinuationToken")
                if not token:
                    return keys

        return self._call(listing, f"list s3://{self.bucket_out}/{prefix}")

    def upload(self, item: Item) -> None:
        """Put one input file into the service's input path (Content-MD5 checked by the server)."""
        data = Path(item.source).read_bytes()
        key = f"{self.folder_in}/{Path(item.source).name}" if self.folder_in else Path(item.source).name
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        self._call(lambda: self.s3.put_object(Bucket=self.bucket_in, Key=key, Body=data, ContentMD5=md5),
                   f"upload {item.source} to s3://{self.bucket_in}/{key}")
        item.key = f"{self.bucket_in}/{key}"

    def fetch_outputs(self, item: Item) -> list[Result]:
        """Download an input's outputs to its destination (presigned links: the keys stay here)."""
        outputs = [Output(name=k.rsplit("/", 1)[-1], description=f"{self.service} output of {Path(item.source).name}",
                          href=self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket_out, "Key": k},
                                                              ExpiresIn=3600)) for k in item.outputs]
        return download(outputs, item.dest, progress=False)

    # ------------------------------------------------------------------ the run

    def run(self) -> list[Item]:
        """Upload or submit every input, wait for all, download every output; the items with their fate."""
        from tqdm import tqdm

        client = self.client
        svc = client.service(self.service)
        inbox, outbox = _minio_path(svc, "input"), _minio_path(svc, "output")
        files = [i for i in self.items if not i.inline]
        if files and inbox is None:
            raise ServiceError(f"{client.label}: service {self.service!r} has no MinIO input path to upload files "
                               "to; give text or JSON inputs (sent to /job) instead")
        if outbox is None:
            log.warning("service %s has no MinIO output path: only job states are reported", self.service)
        self.bucket_in, self.folder_in = inbox or ("", "")
        self.bucket_out, self.folder_out = outbox or ("", "")
        for item in self.items:
            if _done_before(item.dest):
                item.status, item.error = "skipped", "results already at the destination"
        self.s3 = _minio_settings(client).client(signature_version="s3v4")  # presigned links: SigV4
        todo = [i for i in self.items if not i.final]
        existing = set(self.list_outputs()) if todo else set()
        for item in todo:
            item.started = time.time()
            mine = sorted(k for k in existing if _belongs(k.rsplit("/", 1)[-1], item.stem))
            if not item.inline and mine:  # finished earlier: its outputs are in the bucket already
                item.outputs, item.status, item.job = mine, "succeeded", "(earlier run)"
                item.finished = time.time()
        bar = tqdm(total=len(self.items), desc=f"{self.service} jobs", unit="input", file=sys.stderr,
                   disable=not self.progress, initial=sum(1 for i in self.items if i.final))
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="oscar-results")
        try:
            for item in self.items:
                if item.status == "succeeded":
                    self.downloads[id(item)] = pool.submit(self.fetch_outputs, item)
            for item in [i for i in todo if i.inline and not i.final]:
                item.job = client.submit(self.service, base64.b64encode(item.source.encode())) or ""
                item.status = "submitted"
                self.assigned.add(item.job)
            self.before = set(client.jobs(self.service)) if any(not i.final for i in todo) else set()
            for item in [i for i in todo if not i.inline and not i.final]:
                try:
                    self.upload(item)
                    item.status = "uploaded"
                except NbpluginsError as exc:
                    item.status, item.error, item.finished = "failed", str(exc), time.time()
            self.before -= self.assigned
            state = {"final": sum(1 for i in self.items if i.final)}

            def advance(_: Any) -> None:
                for item in self.items:
                    if item.final and id(item) not in self.downloads and item.status == "succeeded" and item.outputs:
                        self.downloads[id(item)] = pool.submit(self.fetch_outputs, item)
                final = sum(1 for i in self.items if i.final)
                bar.update(final - state["final"])
                state["final"] = final
                bar.set_postfix_str(f"{sum(i.status == 'failed' for i in self.items)} failed", refresh=True)

            try:
                poll(self.snapshot, lambda done: done, what=f"{client.label} batch of {self.service}",
                     interval=jobs_mod.schedule, max_interval=15.0, deadline=self.timeout,
                     retry=jobs_mod.STATUS_RETRY, on_status=advance)
            except DeadlineExceeded:
                for item in self.items:
                    if not item.final:
                        item.status, item.finished = "failed", time.time()
                        item.error = f"not finished after {self.timeout:.0f} s"
                advance(None)
            for item in self.items:
                future = self.downloads.get(id(item))
                if future is None:
                    continue
                try:
                    item.results = future.result()
                except NbpluginsError as exc:
                    item.status, item.error = "failed", f"download failed: {exc}"
            for item in self.items:
                if item.status == "failed" and item.job and not item.logs and item.job != "(earlier run)":
                    item.logs = self.job_logs(item.job)
        finally:
            pool.shutdown(wait=True)
            bar.close()
        return self.items

    def job_logs(self, job: str) -> str:
        if job not in self.logs:
            try:
                self.logs[job] = self.client.job_logs(self.service, job)
            except NbpluginsError as exc:
                self.logs[job] = f"(logs not available: {exc})"
        return self.logs[job]

    def snapshot(self) -> bool:
        """One look at the jobs and the output bucket; True when every input is final."""
        client = self.client
        jobs = {n: info for n, info in client.jobs(self.service).items() if n not in self.before}
        outputs = self.list_outputs() if any(not i.final for i in self.items) else []
        now = time.time()
        states = {n: client.job_state(info, n) for n, info in jobs.items()}
        waiting = [i for i in self.items if not i.final]
        # inline items: their job is known from submit(); outputs are those its logs name
        for item in waiting:
            if item.inline and item.job in states and states[item.job].final:
                logs = self.job_logs(item.job)
                item.outputs = sorted(k for k in outputs if f"'{k.rsplit('/', 1)[-1]}'" in logs)
                self._finish(item, states[item.job], jobs[item.job], now, logs)
        # files: a final job is matched to an input by the object key its logs name, else by order
        free = [n for n in sorted(states, key=lambda n: (jobs[n].get("creation_time") or "", n))
                if n not in self.assigned]
        uploaded = [i for i in self.items if not i.inline and i.status == "uploaded"]
        for item in uploaded:
            mine = sorted(k for k in outputs if _belongs(k.rsplit("/", 1)[-1], item.stem))
            item.outputs = mine
        for name in [n for n in free if states[n].final]:
            candidates = [i for i in uploaded if not i.job]
            if not candidates:
                break
            with_outputs = [i for i in candidates if i.outputs]
            finished = [n for n in free if states[n].final and n not in self.assigned]
            if states[name] is State.SUCCEEDED and len(with_outputs) == 1 and len(finished) == 1:
                owner: Item | None = with_outputs[0]
            else:
                logs = self.job_logs(name)
                owner = next((i for i in candidates if i.key and (f"'{i.key.split('/', 1)[1]}'" in logs
                                                                 or i.key in logs)), None)
                if owner is None:
                    pool = [i for i in candidates if bool(i.outputs) == (states[name] is State.SUCCEEDED)]
                    owner = (pool or candidates)[0]
            owner.job = name
            self.assigned.add(name)
        for item in uploaded:
            if item.job and item.job in states and states[item.job].final:
                self._finish(item, states[item.job], jobs[item.job], now, self.logs.get(item.job, ""))
            elif not item.job and item.outputs and tuple(item.outputs) == item.seen_outputs:
                item.status, item.finished = "succeeded", now  # its job is gone from the list (deleted)
            item.seen_outputs = tuple(item.outputs)
        return all(i.final for i in self.items)

    def _finish(self, item: Item, state: State, info: dict[str, Any], now: float, logs: str) -> None:
        item.finished = now
        if state is State.SUCCEEDED:
            item.status = "succeeded"
        else:
            item.status = "failed"
            item.logs = logs or self.job_logs(item.job)
            errors = [line for line in item.logs.splitlines() if "ERROR" in line or "rror" in line]
            item.error = (errors[-1] if errors else f"job {item.job} {info.get('status', state.value)}")[-300:]


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except OSError:
        return False


def run_batch(client: Oscar, service: str, inputs: list[str], dest: str, *, timeout: float = 3600.0,
              progress: bool = True) -> list[Item]:
    """Run every input through ``service`` asynchronously; one :class:`Item` per input, in order."""
    return Batch(client, service, inputs, dest, timeout=timeout, progress=progress).run()


def table(items: list[Item]) -> str:
    """The per-input table: input, job, status, outputs, duration."""
    rows = [("input", "job", "status", "outputs", "duration")]
    for item in items:
        row = item.row()
        rows.append((Path(item.source).name if not item.inline else row["input"], row["job"][:36], row["status"],
                     str(len(row["outputs"])), "-" if row["duration"] is None else f"{row['duration']:.1f} s"))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


__all__ = ["Batch", "Item", "run_batch", "table"]
