"""nbgitpuller links: a URL that clones or updates a git repo in the user's hub home and
opens one notebook in JupyterLab or the classic UI.

The link is built exactly as nbgitpuller 1.x parses it (``nbgitpuller/handlers.py``)::

    <hub>/hub/user-redirect/git-pull?repo=R&branch=B&targetPath=T&urlpath=lab/tree/T/F

and differs from the official generator where that one is wrong or unsafe:

- ``targetPath`` is always written, and ``urlpath`` is built from it. The official generator
  builds ``urlpath`` from the repo name (stripping ``.git``) even when a target path is set
  (nbgitpuller PR #386), while the server clones into ``repo.rstrip('/').split('/')[-1]``
  (keeping ``.git``): such links open a file that is not there.
- ``backup`` is never written: the server turns it on for any value, ``false`` included.
- target paths are plain relative folders: no dot-folders, no ``..``, no absolute paths
  (nbgitpuller issue #330: a link could otherwise plant start-up code in ``~/.ipython``).
- repo URLs are http(s) without credentials (a link is shared, printed, QR-coded).

:func:`check` resolves the branch and the file to open in the repo itself (``git ls-remote``
and a shallow, blob-less fetch), so a link to a missing file or branch is refused.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from nbplugins import files
from nbplugins.errors import TransientError, ValidationError
from nbplugins.hub import hubs

UIS = ("lab", "classic")
# What nbgitpuller redirects to after the pull (``redirectUrl = baseUrl + urlpath``).
_UI_PREFIX = {"lab": "lab/tree/", "classic": "tree/"}
# Characters left readable in query values: nbgitpuller (tornado) decodes the rest.
_QUERY_SAFE = "/:@"
GIT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Resolved:
    """What :func:`check` found in the repo: the branch, its commit and the kind of ``open``."""

    branch: str
    commit: str
    default_branch: str | None
    open_kind: str | None = None  # "file" or "folder"


@dataclass(frozen=True)
class Link:
    """An nbgitpuller link and the parts it was built from."""

    url: str
    hub: str
    repo: str
    branch: str | None
    target_path: str
    open: str | None
    ui: str
    urlpath: str
    resolved: Resolved | None = None

    def __str__(self) -> str:
        return self.url

    def home_path(self) -> str:
        """Path of the opened file (or the folder) relative to the user's home."""
        return posixpath.join(self.target_path, self.open) if self.open else self.target_path

    def write_qr(self, path: str | os.PathLike[str]) -> Path:
        """Write the link as a QR-code PNG (atomically) and return its path."""
        return write_qr(self.url, path)


# ----------------------------------------------------------------------------- validation


def default_target_path(repo: str) -> str:
    """The folder nbgitpuller clones into when a link has no ``targetPath``.

    Same rule as ``UIHandler`` in nbgitpuller 1.x: the last path segment of the repo URL
    after stripping trailing slashes; ``.git`` is kept.
    """
    return repo.rstrip("/").split("/")[-1]


def check_repo(repo: str, allow_local: bool | None = None) -> str:
    """Accept an http(s) repo URL (or, when enabled, a local path); return it normalized."""
    repo = repo.strip()
    if not repo:
        raise ValidationError("repo: empty; give the http(s) URL of a git repository")
    if allow_local is None:
        from nbplugins import config

        allow_local = config.get().hubs.allow_local_repos
    parts = urllib.parse.urlsplit(repo)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ValidationError(f"repo {repo!r}: the URL has no host")
        if parts.username or parts.password:
            shown = urllib.parse.urlunsplit(
                (parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""),
                 parts.path, "", ""))
            raise ValidationError(
                f"repo {shown}: the URL contains a user name or password; a link is shared with "
                "everyone who gets it, so use a public repo URL without credentials"
            )
        if parts.query or parts.fragment:
            raise ValidationError(f"repo {repo!r}: the URL must not have a query or fragment")
        return repo
    local = parts.scheme == "file" or (not parts.scheme and repo.startswith("/"))
    if local and allow_local:
        return repo
    if local:
        raise ValidationError(
            f"repo {repo!r}: a local path only works on this machine; give the http(s) URL "
            "of a git repository the hub can reach"
        )
    raise ValidationError(
        f"repo {repo!r}: not an http(s) URL (nbgitpuller clones it from the user's server; "
        "ssh and other schemes need credentials the server does not have)"
    )


_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def _segments(path: str, what: str) -> list[str]:
    """Split a relative POSIX path, refusing absolute paths, ``..``, ``~`` and control chars."""
    if _BAD_CHARS.search(path):
        raise ValidationError(f"{what} {path!r}: contains a backslash or control character")
    if path.startswith("/"):
        raise ValidationError(f"{what} {path!r}: must be relative to the home folder, not absolute")
    if path.startswith("~"):
        raise ValidationError(f"{what} {path!r}: must be a plain relative folder (no ~)")
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise ValidationError(f"{what} {path!r}: must not contain '..' (links stay inside the target folder)")
    return segments


def check_target_path(path: str) -> str:
    """Accept a plain relative folder: no dot-folders, no ``..``, not absolute; return it clean."""
    segments = _segments(path, "target path")
    if not segments:
        raise ValidationError(
            f"target path {path!r}: names the home folder itself; give a folder such as 'course'"
        )
    hidden = [s for s in segments if s.startswith(".")]
    if hidden:
        raise ValidationError(
            f"target path {path!r}: {hidden[0]!r} is a dot-folder; links may only write to plain "
            "folders (a dot-folder such as .ipython or .local could plant start-up code)"
        )
    return "/".join(segments)


def _parent_path(path: str | None) -> str | None:
    if not path or not path.strip().strip("/"):
        return None
    try:
        return check_target_path(path)
    except ValidationError as exc:
        raise ValidationError(str(exc).replace("target path", "parent path (NBGITPULLER_PARENTPATH)", 1)) from None


def check_open_path(path: str) -> str:
    """Accept a path inside the target folder (the repo root); return it clean."""
    segments = _segments(path, "--open file")
    if not segments:
        raise ValidationError(f"--open {path!r}: names no file; omit --open to open the folder")
    return "/".join(segments)


# ----------------------------------------------------------------------------- building


def urlpath_for(ui: str, home_path: str) -> str:
    """The ``urlpath`` nbgitpuller redirects to after the pull, for ``ui`` and a home path."""
    if ui not in _UI_PREFIX:
        raise ValidationError(f"ui {ui!r}: choose one of {', '.join(UIS)}")
    # nbgitpuller decodes the query once and redirects to base_url + urlpath: quoting each
    # segment keeps names with spaces, '#', '?' or '%' intact in the final address.
    return _UI_PREFIX[ui] + urllib.parse.quote(home_path, safe="/")


def build(
    repo: str,
    hub: str | None = None,
    *,
    branch: str | None = None,
    target_path: str | None = None,
    open: str | None = None,  # noqa: A002 - the CLI's --open
    ui: str = "lab",
    check: bool = False,
    allow_local: bool | None = None,
    parent_path: str | None = None,
) -> Link:
    """Build (and with ``check=True`` verify against the repo) an nbgitpuller link.

    ``parent_path``: the hub's ``NBGITPULLER_PARENTPATH``. nbgitpuller clones into
    ``<home>/<parent>/<targetPath>`` but redirects to ``urlpath`` as given, so a hub that sets
    it needs the parent in ``urlpath`` too (``targetPath`` stays relative to the parent).
    """
    repo = check_repo(repo, allow_local)
    hub_url = hubs.resolve(hub).url
    assert hub_url is not None
    if branch is not None:
        branch = check_branch_name(branch)
    if target_path is None:
        derived = default_target_path(repo)
        try:
            target = check_target_path(derived)
        except ValidationError as exc:
            raise ValidationError(
                f"the folder nbgitpuller would derive from the repo URL ({derived!r}) is not "
                f"usable ({exc}); give --target-path"
            ) from None
    else:
        target = check_target_path(target_path)
    open_path = check_open_path(open) if open is not None else None
    parent = _parent_path(parent_path)
    home_path = posixpath.join(*[p for p in (parent, target, open_path) if p])
    urlpath = urlpath_for(ui, home_path)
    resolved = verify(repo, branch, open_path) if check else None

    params: list[tuple[str, str]] = [("repo", repo)]
    if branch:
        params.append(("branch", branch))
    params += [("targetPath", target), ("urlpath", urlpath)]
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote, safe=_QUERY_SAFE)
    url = f"{hub_url}hub/user-redirect/git-pull?{query}"
    return Link(url=url, hub=hub_url, repo=repo, branch=branch, target_path=target,
                open=open_path, ui=ui, urlpath=urlpath, resolved=resolved)


def check_branch_name(branch: str) -> str:
    """Refuse branch names git would refuse (and option-like names)."""
    branch = branch.strip()
    if (not branch or branch.startswith(("-", "/")) or branch.endswith(("/", ".lock", "."))
            or ".." in branch or "@{" in branch or re.search(r"[\x00-\x20~^:?*\[\\\x7f]", branch)):
        raise ValidationError(f"branch {branch!r}: not a valid git branch or tag name")
    return branch


def parse(url: str) -> dict[str, str]:
    """The query of a git-pull link, decoded the way nbgitpuller (tornado) decodes it."""
    from tornado.httputil import parse_qs_bytes

    query = urllib.parse.urlsplit(url).query
    return {k: v[-1].decode() for k, v in parse_qs_bytes(query, keep_blank_values=True).items()}


def write_qr(text: str, path: str | os.PathLike[str]) -> Path:
    """Encode ``text`` as a QR-code PNG at ``path``, written to a temp name then renamed."""
    import qrcode

    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValidationError(f"--qr {str(path)!r}: give a file name ending in .png")
    if not target.parent.is_dir():
        raise ValidationError(f"--qr {str(path)!r}: folder {str(target.parent)!r} does not exist")
    image = qrcode.make(text, error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    png = io.BytesIO()
    image.save(png, format="PNG")
    files.write_atomic(target, png.getvalue(), mode=0o644)
    return target


# ----------------------------------------------------------------------------- checking


def _git_env(repo: str) -> dict[str, str]:
    """Environment for git talking to a remote: C locale, no prompts, only the repo's protocol."""
    scheme = urllib.parse.urlsplit(repo).scheme or "file"
    allowed = "http:https" if scheme in ("http", "https") else "file"
    return {**os.environ, "LANG": "C", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0",
            "GIT_ALLOW_PROTOCOL": allowed, "GIT_CONFIG_NOSYSTEM": "1"}


_TRANSIENT_GIT = re.compile(
    r"Failed to connect|Connection (?:refused|reset|timed out)|Operation timed out|"
    r"returned error: (?:429|5\d\d)|early EOF|RPC failed|unexpected disconnect|"
    r"Could not read from remote|TLS|SSL_ERROR|gnutls", re.IGNORECASE)


def _git(args: list[str], repo: str, what: str, cwd: str | None = None) -> str:
    """Run one git command against ``repo``; transient failures raise TransientError."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=_git_env(repo), capture_output=True,
                              text=True, timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TransientError(f"{what}: git gave no answer within {GIT_TIMEOUT:.0f} s") from None
    except FileNotFoundError:
        raise ValidationError("--check needs the git command; install git") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        reason = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[-1] if lines else "")
        reason = reason.removeprefix("fatal: ").removeprefix("error: ")
        if _TRANSIENT_GIT.search(proc.stderr):
            raise TransientError(f"{what}: {reason}")
        raise ValidationError(f"{what}: {reason or f'git exited with {proc.returncode}'}")
    return proc.stdout


def _retrying(fn, what: str):
    from nbplugins.retry import Retry

    retry = Retry.from_config()
    return retry.with_(deadline=min(retry.deadline, 60.0)).call(fn, what=what)


def remote_refs(repo: str) -> tuple[dict[str, str], str | None]:
    """All refs of ``repo`` (``refs/...`` -> commit, tags peeled) and its default branch."""
    out = _retrying(lambda: _git(["ls-remote", "--symref", "--", repo], repo,
                                 f"cannot list the branches of {repo}"), f"git ls-remote {repo}")
    refs: dict[str, str] = {}
    default = None
    for line in out.splitlines():
        if line.startswith("ref:"):
            target, _, name = line[4:].strip().partition("\t")
            if name == "HEAD" and target.startswith("refs/heads/"):
                default = target.removeprefix("refs/heads/")
            continue
        sha, _, name = line.partition("\t")
        if name.endswith("^{}"):
            refs[name[:-3]] = sha  # a peeled annotated tag: the commit it points at
        elif name not in refs:
            refs[name] = sha
    return refs, default


def verify(repo: str, branch: str | None, open_path: str | None) -> Resolved:
    """Resolve ``branch`` (or the default branch) and check that ``open_path`` exists there."""
    refs, default = remote_refs(repo)
    if branch is None:
        if default is None:
            raise ValidationError(f"{repo}: the repository has no default branch (is it empty?)")
        ref = f"refs/heads/{default}"
        name = default
    else:
        # nbgitpuller accepts a branch or a tag name (GitPuller.branch_exists).
        ref = next((r for r in (f"refs/heads/{branch}", f"refs/tags/{branch}") if r in refs), None)
        if ref is None:
            heads = sorted(r.removeprefix("refs/heads/") for r in refs if r.startswith("refs/heads/"))
            raise ValidationError(
                f"branch {branch!r} does not exist in {repo} "
                f"(branches: {', '.join(heads[:10]) or 'none'}{' ...' if len(heads) > 10 else ''})"
            )
        name = branch
    if ref not in refs:
        raise ValidationError(f"{repo}: default branch {name!r} has no commit (is the repo empty?)")
    commit = refs[ref]
    kind = None
    if open_path is not None:
        kind = _kind_in_repo(repo, ref, open_path)
        if kind is None:
            raise ValidationError(
                f"--open {open_path!r} does not exist in {repo} on {name!r} "
                f"(commit {commit[:10]}); paths are relative to the repo root"
            )
    return Resolved(branch=name, commit=commit, default_branch=default, open_kind=kind)


def _kind_in_repo(repo: str, ref: str, path: str) -> str | None:
    """'file', 'folder' or None for ``path`` at ``ref``, from a shallow fetch without blobs."""
    with tempfile.TemporaryDirectory(prefix="nbplugins-check-") as tmp:
        _git(["init", "-q", tmp], repo, "cannot create a scratch repository")
        _retrying(lambda: _git(
            ["-c", "protocol.version=2", "fetch", "-q", "--no-tags", "--depth", "1",
             "--filter=blob:none", "--", repo, ref], repo, f"cannot fetch {ref} from {repo}", cwd=tmp),
            f"git fetch {repo}")
        out = _git(["ls-tree", "-z", "FETCH_HEAD", "--", path], repo, "cannot list the fetched tree",
                   cwd=tmp)
    for line in out.split("\0"):
        meta, _, name = line.partition("\t")
        if name == path:
            return "folder" if meta.split()[1] == "tree" else "file"
    return None
