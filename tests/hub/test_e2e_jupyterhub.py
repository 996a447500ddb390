"""End to end: a link made by ``nbplugins link`` opened in headless Chromium against a real
JupyterHub on 127.0.0.1 logs in, spawns a server, lets nbgitpuller pull the repo over HTTP
and shows the notebook named in the link in JupyterLab."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.servers import harness
from tests.servers.jupyterhub import chromium_paths

pytestmark = [
    pytest.mark.timeout(420),
    # Checked before the (module-scoped) hub starts, so a machine without Chromium skips at once.
    pytest.mark.skipif(chromium_paths() is None, reason="chromium and chromium-driver are not "
                       "installed (make system-deps installs them)"),
]

ARTIFACTS = Path(os.environ.get("NBPLUGINS_ARTIFACTS_DIR") or Path(__file__).resolve().parents[1] / "artifacts")


def _first_heading(notebook_text: str) -> str | None:
    """The first markdown heading of a notebook, as JupyterLab renders it."""
    for cell in json.loads(notebook_text)["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#"):  # as rendered: without emphasis or code marks
                    return re.sub(r"[*_`]", "", line.lstrip("#")).strip()
    return None


def _keep_screenshot(driver, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    try:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        kept = ARTIFACTS / name
        shutil.copyfile(shot, kept)
    except OSError:
        kept = shot
    print(f"\nscreenshot: {kept}")
    return kept


def test_link_opens_the_named_notebook_in_jupyterlab_after_login_spawn_and_pull(
        hub, http_repo, browser, tmp_path):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    repo, repo_url = http_repo
    # Prefer a real project template; the fixture always adds templates/welcome.ipynb.
    real = sorted(p.relative_to(repo.work).as_posix() for p in (repo.work / "templates").glob("*.ipynb")
                  if p.name != "welcome.ipynb" and p.name != "analysis.ipynb")
    open_file = real[0] if real else "templates/welcome.ipynb"
    heading = _first_heading(repo.read(open_file))

    # No --target-path: the folder nbgitpuller derives from the URL keeps ".git", which the
    # official link generator gets wrong; our link must land in the folder the server uses.
    made = subprocess.run(
        [harness.venv_bin("nbplugins"), "link", repo_url, "--hub", hub.url, "--open", open_file,
         "--check"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link.startswith(f"{hub.url}hub/user-redirect/git-pull?")
    target = repo.bare.name  # course-xxxxxx.git
    assert f"targetPath={target}" in link and "backup" not in link

    user = "alice"
    started = time.monotonic()
    browser.get(link)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.ID, "username_input"))
    assert "/hub/login" in browser.current_url
    browser.find_element(By.ID, "username_input").send_keys(user)
    browser.find_element(By.ID, "password_input").send_keys("any-password")
    browser.find_element(By.ID, "login_submit").click()

    name = open_file.rsplit("/", 1)[-1]
    tab = "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel"
    try:
        WebDriverWait(browser, 300, poll_frequency=0.5).until(
            lambda d: any(e.text == name for e in d.find_elements(By.CSS_SELECTOR, tab)))
        if heading:
            WebDriverWait(browser, 60).until(lambda d: any(
                heading in e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-RenderedMarkdown")))
    except TimeoutException:
        shot = _keep_screenshot(browser, tmp_path, "hub-e2e-failure.png")
        pytest.fail(f"JupyterLab did not show {name} (at {browser.current_url}); screenshot {shot}\n"
                    f"hub log:\n{hub.log()}")
    elapsed = time.monotonic() - started
    print(f"\nlogin + spawn + pull + open: {elapsed:.1f} s")

    # The address is the single-user server's JupyterLab at the path the link named.
    path = urllib.parse.unquote(urllib.parse.urlsplit(browser.current_url).path)
    assert path.startswith(f"/user/{user}/lab"), browser.current_url
    # JupyterLab titles the page after the current document (long names end in "…").
    shown = browser.title.removesuffix(" - JupyterLab")
    assert shown == name or (shown.endswith("…") and name.startswith(shown[:-1])), browser.title
    print(f"address: {browser.current_url}\ntitle: {browser.title}")
    shot = _keep_screenshot(browser, tmp_path, "hub-e2e-jupyterlab.png")
    assert shot.stat().st_size > 10_000

    # nbgitpuller cloned the repo into the user's home, in the folder the link named.
    home = Path(hub.extra["homes"]) / user
    pulled = home / target / open_file
    assert pulled.is_file(), sorted(str(p.relative_to(home)) for p in home.rglob("*") if ".git/" not in str(p))
    assert pulled.read_text() == repo.read(open_file)
    assert (home / target / "pipelines" / "welcome.pipeline").is_file()
    assert not any(p.name.startswith(f"{target}_backup") for p in home.iterdir())
