"""Parameter sweeps: fresh kernel per run, warm pool, summary, skip on re-run, failures,
bad grids and tables, Dask, and no secret in any output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from nbplugins import sweep
from nbplugins.errors import ValidationError
from tests.papermill import notebooks

STATEFUL = (
    "from nbplugins import scraps\n"
    "scraps.glue('seen_before', 'marker' in globals())\n"
    "marker = 1\n"
    "if fail:\n    raise RuntimeError(f'run with n={n} fails on purpose')\n"
    "scraps.glue('square', n * n)"
)


@pytest.fixture
def template(tmp_path) -> Path:
    return notebooks.write(tmp_path / "tpl" / "square.ipynb", "n = 1\nfail = False\nlabel = 'x'", STATEFUL)


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbplugins", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_grid_sweep_runs_each_set_in_a_fresh_kernel_and_summarizes(tmp_path, template):
    (tmp_path / "grid.yaml").write_text("n: [1, 2, 3, 4]\nlabel: demo\n")
    result = cli("sweep", str(template), "--grid", "grid.yaml", "-o", "out/sq-{n}.ipynb", "-j", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "4 ok, 0 failed, 0 skipped" in result.stdout
    report = tmp_path / "sweep-square"
    table = pd.read_csv(report / "summary.csv")
    assert table["n"].tolist() == [1, 2, 3, 4] and set(table["status"]) == {"ok"}
    assert table["value.square"].tolist() == [1, 4, 9, 16]
    assert not table["value.seen_before"].any()  # no state carried between runs
    assert pd.read_parquet(report / "summary.parquet")["value.square"].tolist() == [1, 4, 9, 16]
    assert (report / "overview.png").stat().st_size > 1000
    assert "data:image/png;base64," in (report / "index.html").read_text()
    for n in (1, 2, 3, 4):
        assert nbformat.read(tmp_path / "out" / f"sq-{n}.ipynb", as_version=4).metadata.papermill.parameters["n"] == n

    again = cli("sweep", str(template), "--grid", "grid.yaml", "-o", "out/sq-{n}.ipynb", cwd=tmp_path)
    assert "0 ok, 0 failed, 4 skipped" in again.stdout
    forced = cli("sweep", str(template), "--grid", "grid.yaml", "-o", "out/sq-{n}.ipynb", "--force", cwd=tmp_path)
    assert "4 ok, 0 failed, 0 skipped" in forced.stdout


def test_a_failed_run_does_not_stop_the_others_and_is_listed(tmp_path, template):
    (tmp_path / "runs.csv").write_text("n,fail\n1,false\n2,true\n3,false\n")
    result = cli("sweep", str(template), "--params", "runs.csv", "-o", "out/{index}.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert "2 ok, 1 failed, 0 skipped" in result.stdout
    assert "run 1 failed:" in result.stderr and "run with n=2 fails on purpose" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("nbplugins: error: 1 of 3 runs failed")
    table = pd.read_csv(tmp_path / "sweep-square" / "summary.csv")
    assert table.set_index("n")["status"].to_dict() == {1: "ok", 2: "failed", 3: "ok"}
    # a re-run retries only the failed run
    rerun = cli("sweep", str(template), "--params", "runs.csv", "-o", "out/{index}.ipynb", cwd=tmp_path)
    assert "0 ok, 1 failed, 2 skipped" in rerun.stdout


def test_a_kernel_dying_mid_run_fails_that_run_and_the_pool_recovers(tmp_path):
    tpl = notebooks.write(tmp_path / "die.ipynb", "die = False",
                          "import os\nif die:\n    os._exit(1)\nfrom nbplugins import scraps\nscraps.glue('ok', True)")
    runs = sweep.plan(str(tpl), [{"die": False}, {"die": True}, {"die": False}, {"die": False}],
                      str(tmp_path / "o" / "{index}.ipynb"))
    events = list(sweep.execute_runs(tpl, runs, jobs=2, report_dir=tmp_path / "r"))
    assert [r.status for r in runs] == ["ok", "failed", "ok", "ok"]
    assert "kernel died" in runs[1].error
    assert [e.kind for e in events].count("started") == 4


def test_sweep_events_name_each_run_and_carry_it(tmp_path, template):
    runs = sweep.plan(str(template), [{"n": 1}, {"n": 2, "fail": True}], str(tmp_path / "o" / "{index}.ipynb"))
    events = list(sweep.execute_runs(template, runs, jobs=1, report_dir=tmp_path / "r"))
    ended = {e.subject: e for e in events if e.kind in ("finished", "failed")}
    assert ended["run 0"].kind == "finished" and ended["run 0"].payload is runs[0]
    assert ended["run 0"].line().startswith("run 0: done in ")
    assert ended["run 1"].kind == "failed" and ended["run 1"].payload is runs[1]
    assert ended["run 1"].line().startswith("run 1: FAILED: ") and "fails on purpose" in ended["run 1"].message
    again = sweep.plan(str(template), [{"n": 1}, {"n": 2, "fail": True}], str(tmp_path / "o" / "{index}.ipynb"))
    kinds = [(e.kind, e.subject) for e in sweep.execute_runs(template, again, jobs=1, report_dir=tmp_path / "r")]
    assert kinds == [("reused", "run 0"), ("started", "run 1"), ("failed", "run 1")]
    assert again[0].status == "skipped"  # as sweep.json records it


@pytest.mark.parametrize("content,message", [
    ("n: [1, 2\n", "line 2: not valid YAML"),
    ("n: [1, 2]\nlabel: {a: 1}\n", "line 2, field 'label': expected a list of values or one value"),
    ("n: []\n", "line 1, field 'n': the list of values is empty"),
    ("- n: 1\n- 5\n", "line 2: each run must be a mapping"),
    ("", "the grid is empty"),
])
def test_malformed_grid_names_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "grid.yaml"
    path.write_text(content)
    with pytest.raises(ValidationError, match=message) as info:
        sweep.load_grid(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content,message", [
    ("n,fail\n1,false\n2,true,extra\n", "line 3: expected 2 fields, got 3"),
    ("n,fail\nabc,false\n", "line 2, field 'n': 'abc' is not an int"),
    ("n,fail\n1,maybe\n", "line 2, field 'fail': 'maybe' is not a bool"),
    ("n,2x\n1,2\n", "line 1, column 2: '2x' is not a parameter name"),
    ("n,fail\n", "has a header but no runs"),
])
def test_malformed_table_names_file_line_and_field(tmp_path, template, content, message):
    path = tmp_path / "runs.csv"
    path.write_text(content)
    from nbplugins.papermill import parameters

    with pytest.raises(ValidationError, match=message):
        sweep.load_table(path, parameters.declared(nbformat.read(template, as_version=4)))


def test_output_pattern_mapping_two_runs_to_one_path_is_refused_before_running(tmp_path, template):
    (tmp_path / "grid.yaml").write_text("n: [1, 2]\nlabel: [a, b]\n")
    result = cli("sweep", str(template), "--grid", "grid.yaml", "-o", "out/{n}.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert "maps runs 0 and 1 to" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "sweep-square").exists()


def test_unknown_parameter_lists_the_valid_names_unless_allowed(tmp_path, template):
    (tmp_path / "grid.yaml").write_text("n: [1]\nalpha: [0.5]\n")
    result = cli("sweep", str(template), "--grid", "grid.yaml", "-o", "o/{index}.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert "unknown parameter alpha (the parameters cell declares: fail, label, n" in result.stderr
    allowed = cli("sweep", str(template), "--grid", "grid.yaml", "-o", "o/{index}.ipynb", "--allow-unknown",
                  cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr


def test_template_without_parameters_cell_warns_and_runs(tmp_path, caplog):
    tpl = notebooks.write(tmp_path / "plain.ipynb", None, "from nbplugins import scraps\nscraps.glue('n2', n * 2)")
    runs = sweep.plan(str(tpl), [{"n": 2}], str(tmp_path / "o" / "{n}.ipynb"))
    assert "has no cell tagged 'parameters'" in caplog.text
    list(sweep.execute_runs(tpl, runs, report_dir=tmp_path / "r"))
    assert runs[0].values == {"n2": 4}


def test_sweep_runs_on_a_dask_cluster_with_the_same_command(tmp_path, template):
    from distributed import LocalCluster

    (tmp_path / "grid.yaml").write_text("n: [2, 3, 5]\n")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        result = cli("sweep", str(template), "--grid", "grid.yaml", "-o", "out/{n}.ipynb", "--executor", "dask",
                     "--scheduler", cluster.scheduler_address, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "sweep-square" / "summary.csv")
    assert table["value.square"].tolist() == [4, 9, 25]


def test_secret_references_reach_the_kernels_but_no_output(tmp_path, canary):
    tpl = notebooks.write(tmp_path / "s.ipynb", "key = ''\nn = 0",
                          "import hashlib\nfrom nbplugins import scraps\nprint('key is', key)\n"
                          "scraps.glue('key_len', len(key))\nscraps.glue('key_echo', key)")
    (tmp_path / "grid.yaml").write_text("n: [1, 2]\nkey: '@env:API_KEY'\n")
    result = cli("sweep", str(tpl), "--grid", "grid.yaml", "-o", "out/{n}-{key}.ipynb", cwd=tmp_path,
                 env={"API_KEY": canary})
    assert result.returncode == 0, result.stderr
    texts = [result.stdout, result.stderr] + [p.read_text(errors="replace") for p in tmp_path.rglob("*")
                                              if p.is_file() and p.suffix != ".parquet"]
    texts.append((tmp_path / "sweep-s" / "summary.parquet").read_bytes().decode("latin-1"))
    assert all(canary not in t for t in texts)
    table = pd.read_csv(tmp_path / "sweep-s" / "summary.csv")
    assert table["value.key_len"].tolist() == [len(canary)] * 2
    assert set(table["key"]) == {"secret"} and (tmp_path / "out" / "1-secret.ipynb").exists()


def test_outputs_go_to_s3_and_a_rerun_skips_them(tmp_path, template, rclone, bucket):  # noqa: F811
    from tests.servers import s3 as s3_servers

    (tmp_path / "grid.yaml").write_text("n: [3, 4]\n")
    env = s3_servers.aws_env(rclone)
    args = ("sweep", str(template), "--grid", "grid.yaml", "-o", f"s3://{bucket}/runs/sq-{{n}}.ipynb")
    first = cli(*args, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    stored = Path(str(rclone.extra["root"])) / bucket / "runs"
    assert sorted(p.name for p in stored.iterdir()) == ["sq-3.ipynb", "sq-4.ipynb"]
    assert nbformat.read(stored / "sq-4.ipynb", as_version=4).metadata.papermill.parameters == {"n": 4}
    assert str(env["AWS_SECRET_ACCESS_KEY"]) not in first.stdout + first.stderr
    again = cli(*args, cwd=tmp_path, env=env)
    assert "0 ok, 0 failed, 2 skipped" in again.stdout
