"""Our links as nbgitpuller itself reads them: a real jupyter server with nbgitpuller's
extension renders the git-pull page (the parameters its JavaScript will use), pulls through
its SSE API, and the page we would be redirected to exists in the server's contents."""

from __future__ import annotations

import html
import json
import re
import secrets as pysecrets
import urllib.parse
from pathlib import Path

import pytest
import requests

from nbplugins.hub import links
from tests.servers import harness


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory):
    """A single-user jupyter server (token auth) whose root is a temp 'home'."""
    yield from _jupyter_server(tmp_path_factory)


@pytest.fixture(scope="module")
def parent_path_server(tmp_path_factory):
    """The same, on a hub that sets ``NBGITPULLER_PARENTPATH=pulled``."""
    yield from _jupyter_server(tmp_path_factory, {"NBGITPULLER_PARENTPATH": "pulled"})


def _jupyter_server(tmp_path_factory, env: dict[str, str] | None = None):
    root = tmp_path_factory.mktemp("server-home")
    token = pysecrets.token_hex(16)
    argv = [harness.venv_bin("jupyter"), "server", "--ServerApp.allow_root=True",
            f"--ServerApp.ip={harness.HOST}", "--ServerApp.port={port}", "--ServerApp.open_browser=False",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    server = harness.start("jupyter-server", argv, cwd=root, timeout=120, env=env,
                           ready=None, log_dir=tmp_path_factory.mktemp("jupyter-server-log"))
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the port opens before extensions finish loading
        try:
            if session.get(f"{server.url}/git-pull/static/dist/bundle.js", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.3)
    yield server, session, root
    server.stop()


def page_params(server, session, link_url: str) -> dict[str, str]:
    """The data-* attributes nbgitpuller's git-pull page hands to its JavaScript, decoded."""
    query = urllib.parse.urlsplit(link_url).query
    response = session.get(f"{server.url}/git-pull?{query}", timeout=30)
    assert response.status_code == 200, response.text[:500]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', response.text))
    # index.js: decodeURIComponent(body.getAttribute('data-' + key))
    return {k: urllib.parse.unquote(html.unescape(v)) for k, v in attrs.items()}


@pytest.mark.parametrize("ui, prefix", [("lab", "lab/tree/"), ("classic", "tree/")])
def test_nbgitpuller_reads_target_branch_and_redirect_path_exactly(jupyter_server, ui, prefix):
    server, session, _ = jupyter_server
    link = links.build("https://github.com/org/course.git", "egi", branch="v1.2",
                       target_path="work/course 2026", open="templates/a b#1?.ipynb", ui=ui)
    got = page_params(server, session, link.url)
    assert got["repo"] == "https://github.com/org/course.git"
    assert got["branch"] == "v1.2"
    assert got["targetpath"] == "work/course 2026"
    assert "backup" not in got
    # The page redirects to base_url + path; the path's segments stay percent-encoded so
    # '#' and '?' in names survive, and decode to exactly target/open.
    assert got["path"] == link.urlpath
    assert got["path"].startswith(prefix)
    assert urllib.parse.unquote(got["path"][len(prefix):]) == "work/course 2026/templates/a b#1?.ipynb"


@pytest.mark.parametrize("repo", [
    "https://github.com/org/course.git",
    "https://gitlab.example.org/group/sub/course/",
    "https://example.org/git/course.bundle",
])
def test_default_target_path_is_the_folder_nbgitpuller_derives_itself(jupyter_server, repo):
    server, session, _ = jupyter_server
    # A link without targetPath, as the official generator writes it.
    query = urllib.parse.urlencode({"repo": repo, "urlpath": "lab/tree/x"})
    got = page_params(server, session, f"http://hub/hub/user-redirect/git-pull?{query}")
    assert got["targetpath"] == links.default_target_path(repo)
    assert links.build(repo, "egi").target_path == got["targetpath"]


def test_backup_false_turns_backup_on_and_drops_the_redirect_path(jupyter_server):
    """Why links never carry ``backup``: nbgitpuller treats any value as true."""
    server, session, _ = jupyter_server
    got = page_params(server, session, "http://hub/hub/user-redirect/git-pull?"
                      "repo=https://github.com/org/course&urlpath=lab/tree/course/a.ipynb&backup=false")
    assert got["backup"] == "false"   # passed on to the pull API, where it is truthy
    assert got["path"] == ""          # and the page redirects to the server root, not the notebook


def test_a_pull_through_the_server_api_puts_the_linked_notebook_where_the_link_opens(jupyter_server, http_repo):
    server, session, root = jupyter_server
    repo, url = http_repo
    link = links.build(url, "egi", target_path="course", open="templates/welcome.ipynb", check=True)
    got = page_params(server, session, link.url)
    last = _pull(server, session, got)
    assert last["phase"] == "finished", last
    pulled = Path(root) / "course" / "templates" / "welcome.ipynb"
    assert pulled.read_text() == repo.read("templates/welcome.ipynb")
    # The redirect target names that very file in the server's contents API.
    path = urllib.parse.unquote(got["path"].removeprefix("lab/tree/"))
    model = session.get(f"{server.url}/api/contents/{urllib.parse.quote(path)}",
                        params={"content": "0"}, timeout=30).json()
    assert model["type"] == "notebook" and model["path"] == "course/templates/welcome.ipynb"


def _pull(server, session, got: dict[str, str]) -> dict:
    """What nbgitpuller's gitsync.js does: GET git-pull/api?repo=&targetpath= and read the event stream."""
    api = {"repo": got["repo"], "targetpath": got["targetpath"]}
    events = []
    with session.get(f"{server.url}/git-pull/api", params=api, stream=True, timeout=120) as response:
        for line in response.iter_lines(decode_unicode=True):
            if line and line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if events[-1].get("phase") in ("finished", "error"):
                    break
    return events[-1]


def test_on_a_hub_with_a_parent_path_the_link_opens_the_notebook_nbgitpuller_pulled(parent_path_server, http_repo):
    server, session, root = parent_path_server
    repo, url = http_repo
    plain = links.build(url, "egi", target_path="course", open="templates/welcome.ipynb")
    link = links.build(url, "egi", target_path="course", open="templates/welcome.ipynb", parent_path="pulled")
    got = page_params(server, session, link.url)
    assert got["targetpath"] == "course" and got["path"] == "lab/tree/pulled/course/templates/welcome.ipynb"
    assert _pull(server, session, got)["phase"] == "finished"
    assert (Path(root) / "pulled" / "course" / "templates" / "welcome.ipynb").read_text() == \
        repo.read("templates/welcome.ipynb")

    def contents(urlpath: str) -> int:
        path = urllib.parse.unquote(urlpath.removeprefix("lab/tree/"))
        return session.get(f"{server.url}/api/contents/{urllib.parse.quote(path)}", params={"content": "0"},
                           timeout=30).status_code

    assert contents(got["path"]) == 200
    assert contents(page_params(server, session, plain.url)["path"]) == 404  # why the parent must be in urlpath


def test_a_parent_path_that_escapes_the_home_is_refused():
    with pytest.raises(links.ValidationError, match="parent path"):
        links.build("https://github.com/EGI-Federation/x", "egi", parent_path="../elsewhere")
