"""The one result downloader: http(s) only, credentials to trusted hosts only, atomic, unpack, S3."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nbplugins.errors import ServiceError, ValidationError
from nbplugins.services.results import RESULTS_FILE, Downloader, Output, download


class FileServer:
    """Serves fixed bodies by path on 127.0.0.1 and records the headers of every request."""

    def __init__(self) -> None:
        self.bodies: dict[str, tuple[int, bytes]] = {}
        self.headers: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.headers.append((self.path, dict(self.headers)))
                status, body = owner.bodies.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.server.shutdown()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_results_land_with_their_names_and_a_results_json(files, tmp_path):
    files.bodies["/a/summary.csv"] = (200, b"x,y\n1,2\n")
    files.bodies["/b/summary.csv"] = (200, b"x,y\n3,4\n")
    results = download([Output("first", href=files.url("/a/summary.csv"), media_type="text/csv"),
                        Output("second", href=files.url("/b/summary.csv"), media_type="text/csv"),
                        Output("mean", value={"mean": 2.5}, media_type="application/json")],
                       str(tmp_path), progress=False)
    assert [r.name for r in results] == ["first", "second", "mean"]
    assert (tmp_path / "1-summary.csv").read_bytes() == b"x,y\n1,2\n"
    assert (tmp_path / "2-summary.csv").read_bytes() == b"x,y\n3,4\n"
    assert json.loads((tmp_path / "mean.json").read_text()) == {"mean": 2.5}
    listed = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert [r["size"] for r in listed] == [8, 8, 13]


def test_the_token_goes_only_to_trusted_hosts(files, tmp_path, canary):
    files.bodies["/own.txt"] = (200, b"own")
    files.bodies["/other.txt"] = (200, b"other")
    downloader = Downloader(headers={"gcube-token": canary}, trusted_hosts={"127.0.0.1"})
    download([Output("own", href=files.url("/own.txt")), Output("other", href=files.url("/other.txt", "localhost"))],
             str(tmp_path), downloader=downloader, progress=False)
    sent = {path: headers.get("gcube-token") for path, headers in files.headers}
    assert sent == {"/own.txt": canary, "/other.txt": None}


@pytest.mark.parametrize("link", ["file:///etc/passwd", "ftp://example.org/x", "/relative/path"])
def test_links_that_are_not_http_are_refused(tmp_path, link):
    with pytest.raises(ServiceError, match="only http"):
        download([Output("x", href=link)], str(tmp_path), progress=False)


def test_a_failed_download_leaves_no_partial_file(files, tmp_path):
    files.bodies["/ok.txt"] = (200, b"ok")
    with pytest.raises(ServiceError, match="HTTP 404"):
        download([Output("ok", href=files.url("/ok.txt")), Output("gone", href=files.url("/gone.txt"))],
                 str(tmp_path), progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not (tmp_path / RESULTS_FILE).exists()


def test_unpack_replaces_a_zip_by_its_members(files, tmp_path):
    files.bodies["/output.zip"] = (200, _zip({"maps/a.png": b"png", "table.csv": b"t"}))
    results = download([Output("output", href=files.url("/output.zip"), media_type="application/zip")],
                       str(tmp_path), unpack=True, progress=False)
    assert sorted(r.location.split("/output/")[-1] for r in results) == ["maps/a.png", "table.csv"]
    assert not (tmp_path / "output.zip").exists()


def test_a_zip_member_that_climbs_out_is_refused(files, tmp_path):
    files.bodies["/evil.zip"] = (200, _zip({"../../escaped.txt": b"x"}))
    with pytest.raises(ValidationError, match=r"\.\."):
        download([Output("evil", href=files.url("/evil.zip"))], str(tmp_path / "dest"), unpack=True, progress=False)
    assert not (tmp_path / "escaped.txt").exists()


def test_results_go_straight_to_s3(files, tmp_path, rclone, bucket, s3_env):
    import boto3

    files.bodies["/r.csv"] = (200, b"a,b\n")
    results = download([Output("r", href=files.url("/r.csv"))], f"s3://{bucket}/run1", progress=False)
    assert results[0].location == f"s3://{bucket}/run1/r.csv"
    client = boto3.client("s3", endpoint_url=rclone.url, region_name="us-east-1",
                          aws_access_key_id=str(rclone.extra["access_key"]),
                          aws_secret_access_key=str(rclone.extra["secret_key"]))
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"run1/r.csv", f"run1/{RESULTS_FILE}"} <= keys
