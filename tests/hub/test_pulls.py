"""What users get in their homes when they click a link again: nbgitpuller's own GitPuller
on a local upstream repo, checked against nbgitpuller's documented merge behaviour
(docs/topic/automatic-merging.md and ``nbgitpuller/pull.py``)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from nbgitpuller.pull import GitPuller

from nbplugins.hub import links
from tests.servers import gitrepo


def pull(repo_url: str, home: Path, target: str, branch: str | None = None) -> list[str]:
    """Run nbgitpuller's puller as the git-pull handler does; return its output lines."""
    puller = GitPuller(repo_url, str(home / target), branch=branch, depth=1)
    return list(puller.pull())


def edit_cell(path: Path, index: int, source: str) -> None:
    nb = json.loads(path.read_text())
    nb["cells"][index]["source"] = source
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def cell_source(path: Path, index: int) -> str:
    return "".join(json.loads(path.read_text())["cells"][index]["source"])


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "user-home"
    path.mkdir()
    return path


def test_first_pull_clones_templates_and_pipelines_into_the_link_target(content_repo, home):
    link = links.build(content_repo.url, "egi", target_path="course", open="templates/welcome.ipynb",
                       allow_local=True)
    pull(content_repo.url, home, link.target_path)
    opened = home / link.home_path()
    assert opened.is_file()
    assert opened.read_text() == content_repo.read("templates/welcome.ipynb")
    assert (home / "course" / "pipelines" / "welcome.pipeline").is_file()
    assert (home / "course" / "templates" / "analysis.ipynb").is_file()


def test_second_pull_keeps_the_users_edit_and_brings_the_upstream_change(content_repo, home):
    pull(content_repo.url, home, "course")
    mine = home / "course" / "templates" / "welcome.ipynb"
    edit_cell(mine, 2, "print('my own analysis')")
    content_repo.write("templates/analysis.ipynb", gitrepo.notebook("Analysis v2", "total = 42"))
    content_repo.write("templates/new_step.ipynb", gitrepo.notebook("New step"))
    content_repo.commit("Instructor update")

    pull(content_repo.url, home, "course")

    assert cell_source(mine, 2) == "print('my own analysis')"               # case 2: left alone
    theirs = home / "course" / "templates" / "analysis.ipynb"
    assert theirs.read_text() == content_repo.read("templates/analysis.ipynb")  # case 1: pulled
    assert (home / "course" / "templates" / "new_step.ipynb").is_file()       # new upstream file


def test_a_file_the_user_deleted_comes_back_on_the_next_pull(content_repo, home):
    pull(content_repo.url, home, "course")
    gone = home / "course" / "templates" / "welcome.ipynb"
    gone.unlink()
    (home / "course" / "pipelines" / "welcome.pipeline").unlink()

    pull(content_repo.url, home, "course")                                   # case 4

    assert gone.read_text() == content_repo.read("templates/welcome.ipynb")
    assert (home / "course" / "pipelines" / "welcome.pipeline").is_file()


def test_a_deleted_file_comes_back_even_when_upstream_changed_it_meanwhile(content_repo, home):
    pull(content_repo.url, home, "course")
    (home / "course" / "templates" / "welcome.ipynb").unlink()
    content_repo.write("templates/welcome.ipynb", gitrepo.notebook("Welcome v2"))
    content_repo.commit("Instructor rewrites welcome")

    pull(content_repo.url, home, "course")

    assert (home / "course" / "templates" / "welcome.ipynb").read_text() == \
        content_repo.read("templates/welcome.ipynb")


def test_same_lines_changed_on_both_sides_the_user_wins_and_other_upstream_lines_merge(content_repo, home):
    pull(content_repo.url, home, "course")
    mine = home / "course" / "templates" / "welcome.ipynb"
    edit_cell(mine, 2, "print('student version')")
    upstream = json.loads(content_repo.read("templates/welcome.ipynb"))
    upstream["cells"][2]["source"] = "print('instructor version')"            # same line
    upstream["cells"][0]["source"] = "# Welcome to the course"                # a distant line
    (content_repo.work / "templates" / "welcome.ipynb").write_text(json.dumps(upstream, indent=1) + "\n")
    content_repo.commit("Instructor edits welcome")

    out = "".join(pull(content_repo.url, home, "course"))

    assert "-Xours" in out
    assert cell_source(mine, 2) == "print('student version')"                 # case 3: student wins
    assert cell_source(mine, 0) == "# Welcome to the course"                  # case 2: merged in
    assert "<<<<<<<" not in mine.read_text()
    json.loads(mine.read_text())                                               # still a notebook


def test_a_user_file_with_the_name_of_a_new_upstream_file_is_renamed_not_overwritten(content_repo, home):
    pull(content_repo.url, home, "course")
    own = home / "course" / "templates" / "Untitled1.ipynb"
    own.write_text(gitrepo.notebook("My scratch notebook"))
    content_repo.write("templates/Untitled1.ipynb", gitrepo.notebook("Instructor's Untitled1"))
    content_repo.commit("Instructor adds Untitled1")

    pull(content_repo.url, home, "course")                                   # case 5

    assert own.read_text() == content_repo.read("templates/Untitled1.ipynb")
    # The docs say ``Untitled1_<timestamp>.ipynb``; pull.py writes two underscores
    # (``'__%Y%m%d%H%M%S'``). Assert what the code does.
    renamed = [p for p in own.parent.iterdir() if re.fullmatch(r"Untitled1__\d{14}\.ipynb", p.name)]
    assert len(renamed) == 1
    assert "My scratch notebook" in renamed[0].read_text()


def test_a_file_the_user_changed_and_upstream_deleted_is_kept(content_repo, home):
    pull(content_repo.url, home, "course")
    mine = home / "course" / "templates" / "analysis.ipynb"
    edit_cell(mine, 1, "total = 'mine'")
    content_repo.delete("templates/analysis.ipynb")
    content_repo.commit("Instructor removes analysis")

    pull(content_repo.url, home, "course")                                   # modify/delete

    assert cell_source(mine, 1) == "total = 'mine'"


def test_pull_of_a_named_branch_and_refusal_of_a_missing_one(content_repo, home):
    content_repo.write("templates/extra.ipynb", gitrepo.notebook("Only on the workshop branch"))
    content_repo.commit("Workshop material", branch="workshop-2026")
    pull(content_repo.url, home, "course", branch="workshop-2026")
    assert (home / "course" / "templates" / "extra.ipynb").is_file()
    branch = subprocess.run(["git", "branch", "--show-current"], cwd=home / "course",
                            capture_output=True, text=True, check=True).stdout.strip()
    assert branch == "workshop-2026"

    from nbgitpuller.errors import BranchExistError

    with pytest.raises(BranchExistError):
        GitPuller(content_repo.url, str(home / "other"), branch="no-such-branch")
