"""Every bad input through the real ``nbplugins`` command: one line that names the thing, an
exit code, no traceback, no "unexpected", and nothing written (issue #16, section 5)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import nbformat
import pytest

from nbplugins.pipelines import spec
from tests.papermill import notebooks
from tests.servers import s3 as s3_servers

BINARY = bytes(range(256)) * 4  # not UTF-8 (byte 128)
PARAMETERS = "n = 1\nx = 0.5\nlabel = 'a'"


def nbplugins(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbplugins", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, timeout=300)


def template(work: Path, filename: str = "tpl.ipynb", **kernelspec: str | None) -> str:
    """A python3 notebook declaring n (int), x (float) and label (str); kernelspec fields
    given as None are removed (all of them: no kernelspec), others replace the defaults."""
    path = notebooks.write(work / filename, PARAMETERS, "print(n, x, label)")
    if kernelspec:
        nb = nbformat.read(path, as_version=4)
        for key, value in kernelspec.items():
            if value is None:
                nb.metadata.kernelspec.pop(key, None)
            else:
                nb.metadata.kernelspec[key] = value
        if not nb.metadata.kernelspec:
            del nb.metadata["kernelspec"]
        nbformat.write(nb, path)
    return filename


def grid(work: Path, text: str = "n: [1, 2]\n") -> str:
    (work / "grid.yaml").write_text(text)
    return "grid.yaml"


def binary(work: Path, name: str) -> str:
    (work / name).write_bytes(BINARY)
    return name


def source_tree(work: Path) -> str:
    (work / "src" / "sub").mkdir(parents=True)
    (work / "src" / "a.txt").write_text("data")
    (work / "src" / "sub" / "b.txt").write_text("more")
    return "src"


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """A folder nobody can write to: mode 0555, or (as root, which ignores modes) immutable."""
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root where chattr +i is not available: no read-only folder to test with")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def pipeline(work: Path, notebook: str, **kernelspec: str | None) -> str:
    """A one-node pipeline (a .pipeline file built here) running the notebook ``notebook``."""
    template(work, notebook, **kernelspec)
    path = work / "one.yaml"
    path.write_text(json.dumps({"name": "one", "runtime_image": "owner/image:tag",
                                "nodes": {"only": {"notebook": notebook}}}))
    return str(spec.build(path).relative_to(work))


@dataclass
class Case:
    """A bad input: ``setup`` writes its files into the work folder (``stack`` undoes what
    must be undone) and returns the command's arguments; ``says`` must be in the one line."""

    id: str
    setup: Callable[[Path, contextlib.ExitStack], list[str]]
    says: str
    env: Callable[[Path], dict[str, str]] = field(default=lambda work: {})
    usage: bool = False  # click's own usage error (an option out of its range)


def write(work: Path, name: str, text: str) -> str:
    (work / name).parent.mkdir(parents=True, exist_ok=True)
    (work / name).write_text(text)
    return name


def sweep(work: Path, *options: str, tpl: str | None = None) -> list[str]:
    return ["sweep", tpl or template(work), *options]


def report_is_a_file(work: Path, stack: contextlib.ExitStack) -> list[str]:
    write(work, "report", "a file")
    return sweep(work, "--grid", grid(work), "-o", "out/{n}.ipynb", "--report-dir", "report")


def read_only_destination(work: Path, stack: contextlib.ExitStack) -> list[str]:
    stack.enter_context(read_only(work / "ro"))
    return ["data", "sync", source_tree(work), "ro/dest", "-q"]


def only_a_manifest(work: Path, stack: contextlib.ExitStack) -> list[str]:
    write(work, "set/_MANIFEST.json", '{"format": "nbplugins-manifest/1", "files": {}}')
    return ["data", "get", "set", "dest", "-q"]


CASES = [
    Case("binary grid", lambda w, s: sweep(w, "--grid", binary(w, "grid.yaml"), "-o", "out/{n}.ipynb"),
         "grid.yaml: not a text file"),
    Case("binary table", lambda w, s: sweep(w, "--params", binary(w, "runs.csv"), "-o", "out/{n}.ipynb"),
         "runs.csv: not a text file"),
    Case("binary config", lambda w, s: ["token", "check"], "config.toml: not a text file",
         env=lambda w: {"NBPLUGINS_CONFIG": str(w / binary(w, "config.toml"))}),
    Case("binary spec", lambda w, s: ["pipeline", "build", binary(w, "spec.yaml")], "spec.yaml: not a text file"),
    Case("binary pipeline", lambda w, s: ["pipeline", "validate", binary(w, "x.pipeline")],
         "x.pipeline: not a text file"),
    Case("notebook JSON is a list", lambda w, s: sweep(w, "--grid", grid(w), "-o", "out/{n}.ipynb",
                                                       tpl=write(w, "list.ipynb", "[1, 2]")),
         "list.ipynb: not a valid notebook (its JSON is a list"),
    Case("unbalanced brace in output pattern", lambda w, s: sweep(w, "--grid", grid(w), "-o", "out/{n.ipynb"),
         "output pattern 'out/{n.ipynb'"),
    Case("sweep -j 0", lambda w, s: sweep(w, "--grid", grid(w), "-o", "out/{n}.ipynb", "-j", "0"),
         "'-j' / '--jobs': 0 is not in the range", usage=True),
    Case("pipeline run -j 0", lambda w, s: ["pipeline", "run", pipeline(w, "nb.ipynb"), "--run-dir", "rd", "-q",
                                            "-j", "0"],
         "'-j' / '--jobs': 0 is not in the range", usage=True),
    Case("data -j 0", lambda w, s: ["data", "sync", source_tree(w), "dest", "-q", "-j", "0"],
         "'-j' / '--concurrency': 0 is not in the range", usage=True),
    Case("negative part size", lambda w, s: ["data", "sync", source_tree(w), "dest", "-q", "--part-size", "-1"],
         "'--part-size': -1 is not in the range", usage=True),
    Case("read-only destination", read_only_destination, "ro/dest: cannot write"),
    Case("report dir is a file", report_is_a_file, "--report-dir report: is a file"),
    Case("notebook without kernelspec", lambda w, s: sweep(w, "--grid", grid(w), "-o", "out/{n}.ipynb",
                                                           tpl=template(w, name=None, display_name=None, language=None)),
         "tpl.ipynb: the notebook names no kernel"),
    Case("kernelspec naming a missing kernel",
         lambda w, s: sweep(w, "--grid", grid(w), "-o", "out/{n}.ipynb", tpl=template(w, name="nbplugins-no-such")),
         "tpl.ipynb: no kernel named 'nbplugins-no-such' is installed (installed: "),
    Case("pipeline notebook naming a missing kernel",
         lambda w, s: ["pipeline", "run", pipeline(w, "nb.ipynb", name="nbplugins-no-such"), "--run-dir", "rd", "-q"],
         "nb.ipynb: no kernel named 'nbplugins-no-such' is installed"),
    Case("folder holding only a manifest", only_a_manifest, "set: holds only _MANIFEST.json and no files"),
    Case("grid value of the wrong type", lambda w, s: sweep(w, "--grid", grid(w, "n: [1, 'two']\n"),
                                                            "-o", "out/{index}.ipynb"),
         "grid.yaml line 1, field 'n': 'two' is a str, but the template declares int"),
    Case("grid number where a str is declared",
         lambda w, s: sweep(w, "--grid", grid(w, "n: [1, 2]\nlabel: [a, 3]\n"), "-o", "out/{index}.ipynb"),
         "field 'label': 3 is an int, but the template declares str (quote it"),
    Case("duplicate grid key", lambda w, s: sweep(w, "--grid", grid(w, "n: [1, 2]\nx: 0.1\nn: [3]\n"),
                                                  "-o", "out/{index}.ipynb"),
         "grid.yaml line 3, field 'n': 'n' is given twice (lines 1 and 3)"),
    Case("duplicate key in an explicit run", lambda w, s: sweep(w, "--grid", grid(w, "- {n: 1, n: 2}\n"),
                                                                "-o", "out/{index}.ipynb"),
         "'n' is given twice"),
    Case("duplicate table column", lambda w, s: sweep(w, "--params", write(w, "runs.csv", "n,x,n\n1,0.1,2\n"),
                                                      "-o", "out/{index}.ipynb"),
         "runs.csv line 1: column 'n' is given twice (columns 1 and 3)"),
]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def assert_one_line(result: subprocess.CompletedProcess[str], says: str, *, usage: bool = False) -> None:
    err = result.stderr
    assert result.returncode != 0, result.stdout + err
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = err.strip().splitlines()
    if usage:  # click: "Usage: ...", "Try ...", "", "Error: Invalid value for ..."
        assert result.returncode == 2 and lines[-1].startswith("Error: Invalid value for ") and says in lines[-1], err
    else:
        assert len(lines) == 1 and lines[0].startswith("nbplugins: error: ") and says in lines[0], err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_naming_it_and_writes_nothing(tmp_path, case):
    work = tmp_path / "work"
    work.mkdir()
    with contextlib.ExitStack() as stack:
        args, env = case.setup(work, stack), case.env(work)
        before = snapshot(work)
        result = nbplugins(*args, cwd=work, env=env)
        assert_one_line(result, case.says, usage=case.usage)
        assert snapshot(work) == before, "the command wrote something"


def test_a_prefix_holding_only_a_manifest_is_named(rclone, bucket, tmp_path):  # noqa: F811
    env = s3_servers.aws_env(rclone)
    client = boto3.client("s3", endpoint_url=rclone.url, region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    client.put_object(Bucket=bucket, Key="set/_MANIFEST.json", Body=b'{"format": "nbplugins-manifest/1", "files": {}}')
    for args in (["get", f"s3://{bucket}/set", "dest"], ["sync", f"s3://{bucket}/set/", f"s3://{bucket}/copy"]):
        result = nbplugins("data", *args, "-q", cwd=tmp_path, env=env)
        assert_one_line(result, f"{args[1]}: holds only _MANIFEST.json and no files")
    assert not (tmp_path / "dest").exists()
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="copy/")


def test_papermill_with_the_nbplugins_engine_refuses_an_unknown_parameter(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    template(work)
    papermill = Path(sys.executable).with_name("papermill")
    result = subprocess.run([str(papermill), "--engine", "nbplugins", "tpl.ipynb", "out.ipynb",
                             "-p", "n", "2", "-p", "alpha", "0.1", "-p", "beta", "1"],
                            capture_output=True, text=True, cwd=work, timeout=300)
    assert result.returncode != 0
    assert ("tpl.ipynb: unknown parameters alpha, beta (the parameters cell declares: label, n, x; "
            in result.stderr), result.stderr
    assert "Executing notebook with kernel" not in result.stderr  # refused before the kernel starts
    assert not (work / "out.ipynb").exists()
    # papermill's own path parameters and declared ones still run
    ok = subprocess.run([str(papermill), "--engine", "nbplugins", "tpl.ipynb", "out.ipynb", "-p", "n", "2",
                         "--inject-paths"], capture_output=True, text=True, cwd=work, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert nbformat.read(work / "out.ipynb", as_version=4).metadata.papermill.parameters["n"] == 2
