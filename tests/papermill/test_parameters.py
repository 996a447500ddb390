"""Which parameters a notebook declares: one reader for the engine, sweeps, pipelines and export."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbplugins.errors import ValidationError
from nbplugins.papermill import parameters
from nbplugins.pipelines import elyra


def notebook(source: str | None, language: str | None = "python", kernel: str | None = "python3") -> nbformat.NotebookNode:
    cells = [new_markdown_cell("# title")]
    if source is not None:
        cells.append(new_code_cell(source, metadata={"tags": ["parameters"]}))
    nb = new_notebook(cells=[*cells, new_code_cell("print(1)")])
    if kernel:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, **({"language": language} if language else {})}
    return nb


CELL = """\
%matplotlib inline
alpha = 1
beta: float = 2
name = "x"  # the help text
settings = dict(a=1, b=2)
nothing = None
low, high = 0, 10
negative = -3
sizes = [1, 2]
t = 1  # type: float
quoted: "list[int]" = []
maybe: Optional[int] = None
obj.attribute = 3
if alpha:
    hidden = 1
"""


def test_python_parameters_are_read_with_their_types():
    assert parameters.declared(notebook(CELL)) == {
        "alpha": "int", "beta": "float", "name": "str", "settings": "None", "nothing": "NoneType",
        "low": "None", "high": "None", "negative": "int", "sizes": "list", "t": "float",
        "quoted": "list[int]", "maybe": "Optional[int]",
    }


def test_a_notebook_without_a_parameters_cell_declares_nothing():
    nb = notebook(None)
    assert parameters.declared(nb) == {} and not parameters.has_parameters_cell(nb)
    assert parameters.parameters_cell(nb) is None


def test_a_notebook_that_names_no_language_is_read_as_python():
    assert parameters.declared(notebook("n = 1", language=None, kernel=None)) == {"n": "int"}


def test_a_cell_that_is_not_python_falls_back_to_papermills_translator():
    # an unclosed bracket: ast gives up, papermill's Python translator still finds the name
    assert parameters.declared(notebook("n = 1\nbroken = (")) == {"n": "int", "broken": "None"}


def test_other_languages_go_through_their_translators_public_inspect():
    from papermill.translators import papermill_translators

    assert parameters.declared(notebook("n <- 1", language="R", kernel="ir")) == {}  # R's cannot inspect
    found = papermill_translators.find_translator("python3", "python").inspect(new_code_cell("n: int = 1  # help"))
    assert [(p.name, p.inferred_type_name, p.default, p.help) for p in found] == [("n", "int", "1", "help")]


def test_check_refuses_undeclared_parameters_naming_the_declared_ones():
    nb = notebook("alpha = 1\nbeta = 'x'")
    parameters.check(nb, {"alpha": 2}, source="nb.ipynb")
    with pytest.raises(ValidationError, match=r"unknown parameter gamma \(the parameters cell declares: alpha, beta"):
        parameters.check(nb, {"gamma": 3}, source="nb.ipynb")


def test_the_pipeline_reader_is_the_same_reader(tmp_path):
    path = tmp_path / "p.ipynb"
    nbformat.write(notebook(CELL), path)
    assert elyra.declared(path) == parameters.declared(nbformat.read(path, as_version=4))
    nbformat.write(notebook(None), path)
    assert elyra.declared(path) is None
