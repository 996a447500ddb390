"""Parameter sets from files: a YAML grid (all combinations, or explicit sets) or a CSV table.

Grids and tables come from colleagues and repositories: every value is checked against the
type the template declares, duplicates and binary files are refused, and a grid that makes
more runs than a ceiling is refused before it is expanded.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from nbplugins import config, files
from nbplugins.errors import ValidationError
from nbplugins.papermill import parameters

log = logging.getLogger(__name__)


def _scalar(node: yaml.Node, where: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise ValidationError(f"{where}: expected a single value, got a {node.id}")
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:  # a tag safe_load refuses (!!python/object ...)
        raise ValidationError(f"{where}: {getattr(exc, 'problem', None) or exc}") from None


#: Python types a value may have for a declared parameter type (an int is a fine float).
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _typed(value: Any, declared: str | None, where: str) -> Any:
    """A grid value checked against the type the template declares, as table cells are.

    ``null`` and secret references pass; an int where a float is declared becomes a float.
    """
    kinds = _TYPES.get(declared or "")
    if kinds is None or value is None or parameters.is_reference(value):
        return value
    if not isinstance(value, kinds) or (isinstance(value, bool) and declared != "bool"):
        kind = type(value).__name__
        hint = (f" (quote it to pass the text: '{value}')" if declared == "str"
                else " (remove the quotes to pass a number or true/false)" if isinstance(value, str) else "")
        raise ValidationError(f"{where}: {value!r} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                              f"but the template declares {declared}{hint}")
    return float(value) if declared == "float" else value


def _name(key: yaml.Node, where: str, seen: dict[str, int]) -> str:
    """A parameter name from a YAML key: an identifier, given once."""
    if not isinstance(key, yaml.ScalarNode) or not str(key.value).isidentifier():
        raise ValidationError(f"{where}: a parameter name must be an identifier")
    line = key.start_mark.line + 1
    if key.value in seen:
        raise ValidationError(f"{where}: {key.value!r} is given twice (lines {seen[key.value]} and {line}); "
                              "give each parameter once")
    seen[key.value] = line
    return key.value


#: Most runs a grid may make unless the caller raises it (a typo can ask for a million).
MAX_RUNS = 10_000


def load_grid(path: str | os.PathLike[str], declared: Mapping[str, str] | None = None,
              max_runs: int | None = MAX_RUNS) -> list[dict[str, Any]]:
    """Parameter sets from YAML: a mapping of name -> list (cartesian product; scalars are
    constants), or a list of mappings (explicit sets). Errors name the file, line and field.

    ``declared`` (name -> type, from :func:`~nbplugins.papermill.parameters.declared`) refuses
    values of another type, as :func:`load_table` does; a name given twice is refused too.
    """
    path = Path(path)
    declared = declared or {}
    text = files.read_text(path, "a grid is YAML text")
    try:
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise ValidationError(f"{path} line {line}: not valid YAML ({exc.problem})") from None
    except yaml.YAMLError as exc:  # a control character, for instance
        raise ValidationError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if root is None:
        raise ValidationError(f"{path}: the grid is empty")
    if isinstance(root, yaml.MappingNode):
        names, choices, seen = [], [], {}
        for key, value in root.value:
            where = f"{path} line {key.start_mark.line + 1}, field {key.value!r}"
            name = _name(key, where, seen)
            if isinstance(value, yaml.SequenceNode):
                if not value.value:
                    raise ValidationError(f"{where}: the list of values is empty")
                options = [_typed(_scalar(item, at := f"{path} line {item.start_mark.line + 1}, field {name!r}"),
                                  declared.get(name), at) for item in value.value]
            elif isinstance(value, yaml.ScalarNode):
                options = [_typed(_scalar(value, where), declared.get(name), where)]
            else:
                raise ValidationError(f"{where}: expected a list of values or one value, got a mapping")
            names.append(name)
            choices.append(options)
        count = math.prod(len(options) for options in choices)
        if max_runs is not None and count > max_runs:
            raise ValidationError(
                f"{path}: the grid makes {count:,} runs ({' x '.join(str(len(o)) for o in choices)}), "
                f"more than the ceiling of {max_runs:,}; raise it with --max-runs {count} if you mean it")
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]
    if isinstance(root, yaml.SequenceNode):
        sets = []
        for item in root.value:
            where = f"{path} line {item.start_mark.line + 1}"
            if not isinstance(item, yaml.MappingNode):
                raise ValidationError(f"{where}: each run must be a mapping of parameter names to values")
            seen: dict[str, int] = {}
            one = {}
            for k, v in item.value:
                name = _name(k, f"{path} line {k.start_mark.line + 1}, field {k.value!r}", seen)
                at = f"{where}, field {name!r}"
                one[name] = _typed(_scalar(v, at), declared.get(name), at)
            sets.append(one)
        return sets
    raise ValidationError(f"{path}: a grid is a mapping of names to lists, or a list of parameter sets")


_CONVERT = {"int": int, "float": float}


def _convert(text: str, declared: str | None, where: str) -> Any:
    """A CSV cell as the type the template declares, else int/float/bool/str by its look."""
    if declared in _CONVERT:
        try:
            return _CONVERT[declared](text)
        except ValueError:
            raise ValidationError(f"{where}: {text!r} is not {'an' if declared == 'int' else 'a'} {declared}") from None
    if declared == "str":  # "true" stays text where the template declares a str
        return text
    if declared == "bool" or text.lower() in ("true", "false"):
        try:
            return config.parse_bool(text)
        except ValueError:
            raise ValidationError(f"{where}: {text!r} is not a bool") from None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_table(path: str | os.PathLike[str], declared: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Parameter sets from a CSV table with a header row; one run per row."""
    path = Path(path)
    declared = declared or {}
    with io.StringIO(files.read_text(path, "a table is CSV text"), newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ValidationError(f"{path}: the table is empty") from None
        except csv.Error as exc:
            raise ValidationError(f"{path} line 1: {exc}") from None
        for col, name in enumerate(header, 1):
            if not name.strip().isidentifier():
                raise ValidationError(f"{path} line 1, column {col}: {name!r} is not a parameter name")
        header = [h.strip() for h in header]
        for col, name in enumerate(header, 1):
            if header.index(name) + 1 != col:
                raise ValidationError(f"{path} line 1: column {name!r} is given twice (columns "
                                      f"{header.index(name) + 1} and {col}); give each parameter once")
        rows = []
        try:
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise ValidationError(f"{path} line {line}: expected {len(header)} fields, got {len(row)}")
                rows.append({name: _convert(cell.strip(), declared.get(name), f"{path} line {line}, field {name!r}")
                             for name, cell in zip(header, row, strict=True)})
        except csv.Error as exc:
            raise ValidationError(f"{path} line {reader.line_num}: {exc}") from None
    if not rows:
        raise ValidationError(f"{path}: the table has a header but no runs")
    return rows
