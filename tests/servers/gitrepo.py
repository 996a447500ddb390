"""Local git repositories for the link and pull tests: a bare "upstream" repo with a work
clone to commit from, and a loopback smart-HTTP server (``git http-backend``) serving it,
so nbgitpuller clones over http:// exactly as it would from GitHub.

Run as ``python -m tests.servers.gitrepo ROOT PORT`` to serve every repo under ROOT.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.servers import harness

GIT_ENV = {"LANG": "C", "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
           "GIT_AUTHOR_NAME": "Instructor", "GIT_AUTHOR_EMAIL": "instructor@example.org",
           "GIT_COMMITTER_NAME": "Instructor", "GIT_COMMITTER_EMAIL": "instructor@example.org"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def git(*args: str, cwd: str | os.PathLike[str] | None = None) -> str:
    """Run git with a fixed identity and C locale; return stdout, raise with stderr."""
    proc = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def notebook(title: str, code: str = "x = 1", parameters: str | None = None) -> str:
    """A small valid nbformat-4 notebook (one header cell, optional parameters cell, code)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {title}"))
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell(code))
    for i, cell in enumerate(nb.cells):  # stable ids: identical content gives identical bytes
        cell.id = f"cell-{i}"
    return nbformat.writes(nb) + "\n"


def pipeline(name: str, notebooks: list[str]) -> str:
    """A minimal Elyra-style .pipeline file naming ``notebooks`` (enough for pull tests)."""
    nodes = [{"id": f"n{i}", "type": "execution_node", "op": "execute-notebook-node",
              "app_data": {"component_parameters": {"filename": nb, "runtime_image": "python:3.11"}}}
             for i, nb in enumerate(notebooks)]
    doc = {"doc_type": "pipeline", "version": "3.0", "id": name, "primary_pipeline": "primary",
           "pipelines": [{"id": "primary", "nodes": nodes, "app_data": {"version": 8, "name": name}}]}
    return json.dumps(doc, indent=2) + "\n"


@dataclass
class ContentRepo:
    """An upstream repo (bare) and the instructor's work clone used to change it."""

    bare: Path
    work: Path
    branch: str = "main"

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def write(self, rel: str, text: str) -> None:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def delete(self, rel: str) -> None:
        git("rm", "-q", "--", rel, cwd=self.work)

    def commit(self, message: str, branch: str | None = None) -> str:
        """Commit everything in the work clone and push it; return the commit id."""
        branch = branch or self.branch
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work).strip()

    def read(self, rel: str, ref: str | None = None) -> str:
        return git("show", f"{ref or 'HEAD'}:{rel}", cwd=self.work)


def make_content_repo(root: Path, name: str = "course-content.git", copy_project: bool = True) -> ContentRepo:
    """A bare repo holding templates/ and pipelines/ (the project's own plus known test files)."""
    root.mkdir(parents=True, exist_ok=True)
    bare = root / name
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("config", "uploadpack.allowFilter", "true", cwd=bare)   # as GitHub: blob-less fetches
    git("config", "http.receivepack", "false", cwd=bare)         # read-only over HTTP
    work = root / f"{bare.stem}-work"
    git("clone", "-q", str(bare), str(work))
    git("checkout", "-q", "-b", "main", cwd=work)
    repo = ContentRepo(bare, work)
    if copy_project:
        for folder in ("templates", "pipelines"):
            src = REPO_ROOT / folder
            if src.is_dir():
                shutil.copytree(src, work / folder, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    repo.write("templates/welcome.ipynb", notebook("Welcome", "print('welcome')", parameters="n = 3"))
    repo.write("templates/analysis.ipynb", notebook("Analysis", "total = sum(range(10))"))
    repo.write("pipelines/welcome.pipeline", pipeline("welcome", ["templates/welcome.ipynb"]))
    repo.write("README.md", "Course content for nbplugins tests.\n")
    repo.commit("Initial content")
    return repo


# ----------------------------------------------------------------------------- smart HTTP


class _GitHandler(BaseHTTPRequestHandler):
    """Pass each request to ``git http-backend`` (CGI) and relay its answer."""

    root = "."
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:  # to the server log, one line each
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _run(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {**os.environ, "GIT_PROJECT_ROOT": self.root, "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0],
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", "")}
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                              timeout=120)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        if proc.returncode and not head:
            status, payload = 500, proc.stderr
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _run
    do_POST = _run


def serve(root: str, port: int) -> None:
    """Serve every repository under ``root`` over smart HTTP on 127.0.0.1:``port``."""
    handler = type("Handler", (_GitHandler,), {"root": str(Path(root).resolve())})
    with ThreadingHTTPServer((harness.HOST, port), handler) as server:
        server.serve_forever()


def start_http(root: Path, log_dir: Path | None = None) -> harness.ServerProcess:
    """Start the smart-HTTP git server for ``root`` in its own process; URL ends with ``/``."""
    argv = [sys.executable, "-m", "tests.servers.gitrepo", str(root), "{port}"]
    server = harness.start("git-http", argv, cwd=REPO_ROOT, log_dir=log_dir,
                           url=f"http://{harness.HOST}:{{port}}/")
    return server


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
