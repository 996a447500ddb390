"""The JupyterHub backend against a real JupyterHub: the user's server is started through the
hub API when needed and the notebook is written through its contents API, with the same name
rules as local homes (nothing overwritten, racing creates get distinct names)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.serve.conftest import notebook, start_service
from tests.servers import jupyterhub


@pytest.fixture(scope="module")
def hub_stack(tmp_path_factory):
    """A real hub, two hub users (servers stopped), and the service in front with a token file."""
    state = tmp_path_factory.mktemp("hub")
    hub = jupyterhub.start(state, state / "homes")
    admin = {"Authorization": f"token {hub.extra['service_token']}"}
    users = [f"nbphub{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for user in users:
        requests.post(f"{hub.url}hub/api/users/{user}", headers=admin, timeout=30).raise_for_status()
    tokens = {user: f"tok-{uuid.uuid4().hex}" for user in [*users, "nbpnotonhub"]}
    (state / "tokens").write_text("".join(f"{t} {u}\n" for u, t in tokens.items()))
    service = start_service("--hub-api", hub.url, "--token-file", str(state / "tokens"), log_dir=state,
                            env={"NBPLUGINS_HUB_API_TOKEN": hub.extra["service_token"]})
    try:
        yield hub, service, users, tokens, state / "homes"
    finally:
        service.stop()
        jupyterhub.stop(hub)


def source(path, index: int = 1) -> str:
    """A cell's source as text (Jupyter saves it as a list of lines)."""
    text = json.loads(path.read_text())["cells"][index]["source"]
    return "".join(text) if isinstance(text, list) else text


def post(hub_stack, user: str, body: str = "TEST", **params: str) -> requests.Response:
    _, service, _, tokens, _ = hub_stack
    return requests.post(service.url, params={"token": tokens[user], **params}, data=body, timeout=300)


def test_a_dry_run_starts_the_stopped_server_and_writes_nothing(hub_stack):
    hub, _, users, _, homes = hub_stack
    answer = post(hub_stack, users[0], folder="eln/exp", filename="x.ipynb", test="True")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"fileName": "x.ipynb", "path": "eln/exp/x.ipynb"}
    model = requests.get(f"{hub.url}hub/api/users/{users[0]}", timeout=30,
                         headers={"Authorization": f"token {hub.extra['service_token']}"}).json()
    assert model["servers"][""]["ready"] is True
    assert not (homes / users[0] / "eln").exists()


def test_a_create_writes_the_notebook_and_a_second_gets_a_numbered_name(hub_stack):
    _, _, users, _, homes = hub_stack
    first, second = notebook("print(1)"), notebook("print(2)")
    a = post(hub_stack, users[0], first, folder="eln/exp", filename="x.ipynb", test="False")
    b = post(hub_stack, users[0], second, folder="eln/exp", filename="x.ipynb", test="False")
    assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
    assert (a.json()["fileName"], b.json()["fileName"]) == ("x.ipynb", "x 2.ipynb")
    folder = homes / users[0] / "eln" / "exp"
    assert (source(folder / "x.ipynb"), source(folder / "x 2.ipynb")) == ("print(1)", "print(2)")
    assert sorted(p.name for p in folder.iterdir() if p.name != ".ipynb_checkpoints") == ["x 2.ipynb", "x.ipynb"]


def test_concurrent_creates_through_the_hub_get_distinct_names(hub_stack):
    _, _, users, _, homes = hub_stack
    bodies = [notebook(f"print({i})") for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda b: post(hub_stack, users[0], b, folder="race", filename="r.ipynb",
                                               test="False"), bodies))
    assert [a.status_code for a in answers] == [200] * 6
    names = {a.json()["fileName"] for a in answers}
    assert len(names) == 6
    sources = {source(homes / users[0] / "race" / n) for n in names}
    assert sources == {f"print({i})" for i in range(6)}


def test_a_file_where_a_folder_is_asked_for_is_400(hub_stack):
    _, _, users, _, _ = hub_stack
    post(hub_stack, users[0], notebook(), folder="", filename="plain.ipynb", test="False")
    answer = post(hub_stack, users[0], notebook(), folder="plain.ipynb/sub", filename="x.ipynb", test="False")
    assert answer.status_code == 400 and "is a file" in answer.json()["message"]


def test_a_user_the_hub_does_not_know_is_404(hub_stack):
    answer = post(hub_stack, "nbpnotonhub", notebook(), folder="a", filename="x.ipynb", test="False")
    assert answer.status_code == 404 and "does not exist on the hub" in answer.json()["message"]


def test_a_template_through_the_hub_answers_the_url_that_opens_it(hub_stack):
    hub, _, users, _, homes = hub_stack
    answer = post(hub_stack, users[1], "", template="random_walk", folder="walks", **{"p.seed": "7"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["url"] == f"{hub.url.rstrip('/')}/hub/user-redirect/lab/tree/walks/random_walk.ipynb"
    assert "seed = 7" in (homes / users[1] / "walks" / "random_walk.ipynb").read_text()


def test_the_hub_token_and_user_tokens_never_reach_the_log(hub_stack):
    hub, service, _, tokens, _ = hub_stack
    log = service.log_path.read_text()
    assert hub.extra["service_token"] not in log
    assert not [t for t in tokens.values() if t in log]
