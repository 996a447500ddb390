"""Building nbgitpuller links: encoding, hubs by name, refusals of unsafe input, ``--check``
against a real repo over HTTP, QR codes, and the ``nbplugins link`` command."""

from __future__ import annotations

import subprocess
import urllib.parse

import pytest

from nbplugins import config
from nbplugins.cli import main
from nbplugins.errors import ValidationError
from nbplugins.hub import hubs, links
from tests.servers import gitrepo, harness

REPO = "https://github.com/EGI-Federation/course.git"


def run_cli(args, capsys):
    """Run ``nbplugins`` in-process; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- building


def test_link_has_the_git_pull_route_and_parameters_nbgitpuller_reads():
    link = links.build(REPO, "egi", branch="main", target_path="course", open="templates/welcome.ipynb")
    assert link.url.startswith("https://notebooks.egi.eu/hub/user-redirect/git-pull?")
    assert links.parse(link.url) == {
        "repo": REPO, "branch": "main", "targetPath": "course",
        "urlpath": "lab/tree/course/templates/welcome.ipynb",
    }
    assert link.home_path() == "course/templates/welcome.ipynb"


def test_urlpath_follows_the_target_path_not_the_repo_name():
    # nbgitpuller PR #386: the official generator would write lab/tree/course/... here.
    link = links.build(REPO, "egi", target_path="workshops/2026", open="a.ipynb")
    assert links.parse(link.url)["urlpath"] == "lab/tree/workshops/2026/a.ipynb"


def test_classic_ui_and_folder_links():
    assert links.parse(links.build(REPO, "egi", open="a.ipynb", ui="classic").url)["urlpath"] == \
        "tree/course.git/a.ipynb"
    assert links.parse(links.build(REPO, "egi", target_path="c").url)["urlpath"] == "lab/tree/c"


def test_default_target_path_keeps_dot_git_as_nbgitpuller_does():
    assert links.default_target_path("https://github.com/org/course.git") == "course.git"
    assert links.default_target_path("https://host/group/course/") == "course"
    link = links.build("https://host/group/course/", "egi", open="x.ipynb")
    assert links.parse(link.url)["targetPath"] == "course"
    assert links.parse(link.url)["urlpath"] == "lab/tree/course/x.ipynb"


def test_names_with_spaces_hash_and_query_marks_survive_the_round_trip():
    link = links.build(REPO, "egi", target_path="my course", open="notes/week #1?.ipynb")
    got = links.parse(link.url)
    assert got["targetPath"] == "my course"
    assert urllib.parse.unquote(got["urlpath"]) == "lab/tree/my course/notes/week #1?.ipynb"
    assert " " not in link.url and link.url.count("#") == 0


@pytest.mark.parametrize("branch", [None, "main", "v1.0"])
def test_a_link_never_carries_backup(branch):
    url = links.build(REPO, "egi", branch=branch, open="a.ipynb").url
    assert "backup" not in links.parse(url) and "backup" not in url


def test_hub_urls_are_normalized_and_keep_a_base_path():
    assert links.build(REPO, "https://hub.example.org/jupyter/hub/home").url.startswith(
        "https://hub.example.org/jupyter/hub/user-redirect/git-pull?")
    assert links.build(REPO, "https://hub.example.org").hub == "https://hub.example.org/"
    assert links.build(REPO, "EGI").hub == "https://notebooks.egi.eu/"


def test_the_eosc_hub_is_built_in_and_the_config_can_move_it(tmp_path, monkeypatch):
    assert links.build(REPO, "eosc").hub == "https://eu-1.notebooks.open-science-cloud-user-apps.eu/"
    cfg = tmp_path / "config.toml"
    cfg.write_text('[hubs]\neosc = "https://eosc-notebooks.example.eu"\ndefault = "workshop"\n'
                   '[hubs.urls]\nworkshop = "https://hub.workshop.example.org/"\n')
    monkeypatch.setenv("NBPLUGINS_CONFIG", str(cfg))
    assert links.build(REPO, "eosc").hub == "https://eosc-notebooks.example.eu/"
    assert links.build(REPO, None).hub == "https://hub.workshop.example.org/"
    assert links.build(REPO, "workshop").hub == "https://hub.workshop.example.org/"
    monkeypatch.setenv("NBPLUGINS_EOSC_HUB_URL", "https://other.example.eu/")
    config._cached = None
    assert links.build(REPO, "eosc").hub == "https://other.example.eu/"


def test_unknown_hub_name_lists_the_known_ones():
    with pytest.raises(ValidationError, match=r"hub 'nope'.*known: egi, eosc"):
        links.build(REPO, "nope")
    assert "egi" in hubs.names()


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("target, reason", [
    (".ipython/profile_default/startup", "dot-folder"),
    ("course/.git", "dot-folder"),
    (".jupyter", "dot-folder"),
    ("../outside", r"'\.\.'"),
    ("course/../../etc", r"'\.\.'"),
    ("/etc/jupyter", "absolute"),
    ("~/course", "no ~"),
    (".", "home folder itself"),
    ("", "home folder itself"),
    ("a\\b", "backslash"),
])
def test_target_paths_that_escape_or_hide_are_refused(target, reason):
    with pytest.raises(ValidationError, match=reason):
        links.build(REPO, "egi", target_path=target)


def test_a_repo_named_like_a_dot_folder_needs_an_explicit_target():
    with pytest.raises(ValidationError, match=r"'\.ipython'.*give --target-path"):
        links.build("https://example.org/u/.ipython", "egi")
    assert links.build("https://example.org/u/.ipython", "egi", target_path="ipython").target_path == "ipython"


@pytest.mark.parametrize("open_path", ["../secret.ipynb", "/etc/passwd", "a/../../b.ipynb", ""])
def test_open_files_outside_the_target_path_are_refused(open_path):
    with pytest.raises(ValidationError):
        links.build(REPO, "egi", target_path="course", open=open_path)


@pytest.mark.parametrize("repo, reason", [
    ("git@github.com:org/course.git", "not an http"),
    ("ssh://git@github.com/org/course.git", "not an http"),
    ("ext::sh -c touch% /tmp/pwned", "not an http"),
    ("/srv/git/course.git", "local path"),
    ("file:///srv/git/course.git", "local path"),
    ("https:///course.git", "no host"),
    ("https://github.com/org/course.git#main", "query or fragment"),
    ("", "empty"),
])
def test_repos_that_are_not_public_http_urls_are_refused(repo, reason):
    with pytest.raises(ValidationError, match=reason):
        links.build(repo, "egi")


def test_credentials_in_the_repo_url_are_refused_without_echoing_them(canary, capsys):
    code, out, err = run_cli(["link", f"https://user:{canary}@github.com/org/course.git", "--hub", "egi"], capsys)
    assert code == 1 and out == ""
    assert "user name or password" in err and canary not in err


def test_local_repos_only_when_enabled(content_repo, monkeypatch):
    bare = content_repo.bare
    assert links.build(str(bare), "egi", allow_local=True).target_path == "course-content.git"
    monkeypatch.setenv("NBPLUGINS_LINK_ALLOW_LOCAL", "1")
    link = links.build(bare.as_uri(), "egi", open="templates/welcome.ipynb", check=True)
    assert link.repo == bare.as_uri() and link.resolved.open_kind == "file"


@pytest.mark.parametrize("branch", ["-upload-pack=x", "a..b", "a b", "x~1", "main.lock", "refs/heads/"])
def test_branch_names_git_would_refuse_are_refused(branch):
    with pytest.raises(ValidationError, match="branch"):
        links.build(REPO, "egi", branch=branch)


# ----------------------------------------------------------------------------- --check


def test_check_resolves_the_default_branch_and_the_file(http_repo):
    repo, url = http_repo
    link = links.build(url, "egi", open="templates/welcome.ipynb", check=True)
    assert link.resolved.branch == "main" and link.resolved.default_branch == "main"
    assert link.resolved.commit == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo.work, capture_output=True, text=True).stdout.strip()
    assert link.resolved.open_kind == "file"
    assert links.build(url, "egi", open="pipelines", check=True).resolved.open_kind == "folder"
    assert "branch" not in links.parse(link.url)  # not pinned: nbgitpuller follows the default


def test_check_accepts_branches_and_tags_as_nbgitpuller_does(http_repo):
    repo, url = http_repo
    repo.write("templates/extra.ipynb", "{}")
    repo.commit("workshop", branch="workshop")
    gitrepo.git("tag", "-a", "v1", "-m", "v1", cwd=repo.work)
    gitrepo.git("push", "-q", "origin", "v1", cwd=repo.work)
    assert links.build(url, "egi", branch="workshop", open="templates/extra.ipynb", check=True).resolved.branch == "workshop"
    assert links.build(url, "egi", branch="v1", check=True).resolved.commit


def test_check_refuses_a_missing_file_or_branch(http_repo):
    _, url = http_repo
    with pytest.raises(ValidationError, match=r"--open 'templates/nope.ipynb' does not exist .* on 'main'"):
        links.build(url, "egi", open="templates/nope.ipynb", check=True)
    with pytest.raises(ValidationError, match=r"branch 'dev' does not exist .*\(branches: main\)"):
        links.build(url, "egi", branch="dev", check=True)
    with pytest.raises(ValidationError, match="not found"):
        links.build(url.replace("course-", "missing-"), "egi", check=True)


# ----------------------------------------------------------------------------- QR + CLI


def test_qr_png_encodes_the_link(tmp_path):
    import qrcode
    from PIL import Image

    link = links.build(REPO, "egi", open="templates/welcome.ipynb")
    out = tmp_path / "qr"
    out.mkdir()
    png = link.write_qr(out / "link.png")
    image = Image.open(png).convert("L")
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    qr.add_data(link.url)
    qr.make(fit=True)
    matrix = qr.get_matrix()  # includes the border
    box = image.width // len(matrix)
    seen = [[image.getpixel((x * box + box // 2, y * box + box // 2)) < 128 for x in range(len(matrix))]
            for y in range(len(matrix))]
    assert seen == matrix
    assert [p.name for p in out.iterdir()] == ["link.png"]  # no temp file left


def test_cli_prints_only_the_link_and_writes_the_qr(http_repo, tmp_path, capsys):
    _, url = http_repo
    code, out, err = run_cli(["link", url, "--hub", "https://hub.example.org", "--target-path", "course",
                              "--open", "templates/welcome.ipynb", "--check", "--qr", str(tmp_path / "q.png")],
                             capsys)
    assert code == 0, err
    assert out.count("\n") == 1
    assert links.parse(out.strip())["urlpath"] == "lab/tree/course/templates/welcome.ipynb"
    assert "checked: main at" in err and "is a file" in err
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["ftp://host/x", "--hub", "egi"], "not an http(s) URL"),
    ([REPO, "--hub", "egi", "--target-path", "../x"], "target path '../x': must not contain '..'"),
    ([REPO, "--hub", "egi", "--open", "../notes.ipynb"], "--open file '../notes.ipynb'"),
    ([REPO], "no hub given"),
    ([REPO, "--hub", "egi", "--qr", "/no/such/dir/q.png"], "does not exist"),
])
def test_cli_bad_input_is_one_error_line_exit_1_and_no_link(args, message, capsys):
    code, out, err = run_cli(["link", *args], capsys)
    assert code == 1
    assert out == ""
    assert err.startswith("nbplugins: error: ") and message in err and err.count("\n") == 1


def test_cli_check_refusal_prints_no_link(http_repo, tmp_path):
    _, url = http_repo
    proc = subprocess.run([harness.venv_bin("nbplugins"), "link", url, "--hub", "egi", "--open", "nope.ipynb",
                           "--check", "--qr", str(tmp_path / "q.png")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "does not exist" in proc.stderr
    assert not (tmp_path / "q.png").exists()
