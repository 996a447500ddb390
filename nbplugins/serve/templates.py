"""Notebooks made from templates on request: ``template=<name>`` with ``p.<name>=<value>``
query arguments or a JSON object body, parameterized with papermill (never executed).

Templates are ``<name>.ipynb`` files in ``--templates``, the configured catalogue
(``[serve] templates``) and the project's ``templates/`` folder, searched in that order.
Parameters are checked against the template's ``parameters`` cell (the one reader,
:func:`nbplugins.papermill.parameters.declared`) and typed like its defaults; secret
references (``@env:``...) are refused, since a web request must not name the host's secrets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbplugins import config
from nbplugins.errors import ValidationError
from nbplugins.serve.base import BadRequest, NotFound

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
PROJECT_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
_JSON_SCALARS = (str, int, float, bool, type(None))


def folders(explicit: str | None = None) -> list[Path]:
    """Where templates are looked up, first match wins: ``explicit``, the config's catalogue, ``templates/``."""
    found = [Path(explicit).expanduser()] if explicit else []
    configured = config.get().serve.templates
    if configured:
        found.append(Path(configured).expanduser())
    found.append(PROJECT_TEMPLATES)
    return found


class Templates:
    """The template catalogue the service makes notebooks from."""

    def __init__(self, search: list[Path]) -> None:
        self.search = search

    def names(self) -> list[str]:
        """Every template name on offer."""
        return sorted({p.stem for folder in self.search if folder.is_dir() for p in folder.glob("*.ipynb")
                       if _NAME.match(p.stem)})

    def find(self, name: str) -> Path:
        """The file of template ``name``; 404 naming what exists when there is none."""
        check_name(name)
        for folder in self.search:
            path = folder / f"{name}.ipynb"
            if path.is_file():
                return path
        known = ", ".join(self.names()) or "none"
        raise NotFound(f"unknown template {name!r}; templates on offer: {known}")

    def render(self, name: str, query: Mapping[str, str], body: bytes) -> bytes:
        """The parameterized notebook as JSON bytes (query parameters win over body ones)."""
        import nbformat
        from papermill.iorw import load_notebook_node
        from papermill.parameterize import parameterize_notebook

        from nbplugins.papermill import parameters

        path = self.find(name)
        nb = load_notebook_node(str(path))  # papermill's reader: every cell gets its tags list
        declared = parameters.declared(nb)
        values: dict[str, Any] = dict(_body_parameters(body))
        values.update({key: _typed(key, text, declared.get(key)) for key, text in query.items()})
        for key, value in values.items():
            if parameters.is_reference(value):
                raise BadRequest(f"parameter {key}: secret references ({str(value)[:6]}...) are not accepted here")
        try:
            parameters.check(nb, values, source=f"template {name}", hint="leave them out")
        except ValidationError as exc:
            raise BadRequest(str(exc)) from None
        if values:
            nb = parameterize_notebook(nb, values)
        return nbformat.writes(nb).encode()


def check_name(name: str) -> str:
    """Refuse a template name that is not a plain name (it also names the default file)."""
    if not _NAME.match(name):
        raise BadRequest("template must be a plain name (letters, digits, '-', '_'), not a path")
    return name


def _body_parameters(body: bytes) -> dict[str, Any]:
    """Parameters from a JSON object body (an empty body, or the ELN's ``TEST``, has none)."""
    text = body.strip()
    if not text or text == b"TEST":
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        raise BadRequest("the body of a template request must be a JSON object of parameters") from None
    if not isinstance(data, dict):
        raise BadRequest("the body of a template request must be a JSON object of parameters")
    for key, value in data.items():
        if not isinstance(value, _JSON_SCALARS) and not isinstance(value, list | dict):
            raise BadRequest(f"parameter {key}: unsupported value")
    return data


def _typed(name: str, text: str, kind: str | None) -> Any:
    """A query-string value typed like the template declares it (int, float, bool, else text)."""
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise BadRequest(f"parameter {name}: {text[:40]!r} is not {'an int' if kind == 'int' else 'a number'}") from None
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in config.TRUE_WORDS:
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise BadRequest(f"parameter {name}: {text[:40]!r} is not true or false")
    return text
