"""Small notebooks the engine and sweep tests execute, written into the test's folder."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def write(path: Path, parameters: str | None, *cells: str) -> Path:
    """A python3 notebook with an optional ``parameters`` cell followed by ``cells``."""
    nb = new_notebook(cells=[new_markdown_cell("# test notebook")])
    if parameters is not None:
        nb.cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells += [new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


LEAKY = (
    "import hashlib, os\n"
    "from nbplugins import scraps, tokens\n"
    "token = tokens.current()\n"
    "scraps.glue('token_sha', hashlib.sha256(token.encode()).hexdigest())\n"
    "scraps.glue('secret_sha', hashlib.sha256(secret.encode()).hexdigest())\n"
    "print('token', token, 'env', os.environ.get('OIDC_ACCESS_TOKEN'), 'secret', secret)\n"
    "token"
)
RAISES = "raise RuntimeError('failing with ' + tokens.current())"
