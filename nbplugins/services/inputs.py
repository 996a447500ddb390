"""User inputs for remote processes: checked against the process description, then made reachable.

Inputs come as ``name=value`` strings (the CLI) or a dict (a template's parameters). Before
anything is submitted, :func:`prepare` checks every one against the process's
:class:`InputSpec` list (unknown name, missing required input, literal of the wrong type,
value outside the allowed ones, unreadable local file) and fails with one message naming
the input. Complex inputs are then made reachable for the service: an ``http(s)`` URL is
passed by reference, a local file is sent inline (up to :data:`INLINE_LIMIT`), an ``s3://``
object becomes a presigned URL through the storage layer, and ``onedata://`` is refused with
what to do instead (the Onedata layer has no share API yet).
"""

from __future__ import annotations

import base64
import difflib
import json
import mimetypes
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nbplugins import secrets
from nbplugins.errors import ValidationError

INLINE_LIMIT = 5 * 2**20  # bytes of a local file sent inline with the request
PRESIGN_SECONDS = 24 * 3600  # how long a presigned S3 URL stays valid: longer than most jobs wait

_INTEGER = {"int", "integer", "long", "short", "byte", "nonnegativeinteger", "positiveinteger", "unsignedint",
            "unsignedlong", "unsignedshort", "negativeinteger", "nonpositiveinteger"}
_NUMBER = {"double", "float", "decimal", "number", "real"}
_BOOLEAN = {"boolean", "bool"}
_STRUCTURED = {"object", "array"}


@dataclass(frozen=True)
class InputSpec:
    """One input of a process, as its description states it (WPS or OGC API - Processes)."""

    name: str
    kind: str = "literal"  # literal, complex, bbox
    data_type: str = "string"  # string, integer, number, boolean, object, array
    min_occurs: int = 1
    max_occurs: int | None = 1  # None: unbounded
    allowed: tuple[Any, ...] = ()
    default: Any = None
    formats: tuple[str, ...] = ()  # media types a complex input accepts, the default first
    title: str = ""

    @property
    def required(self) -> bool:
        return self.min_occurs > 0


@dataclass(frozen=True)
class ProcessSummary:
    """A process as a service lists it."""

    id: str
    title: str = ""
    description: str = ""


@dataclass(frozen=True)
class ProcessDescription:
    """What a process takes and gives: its inputs, and its outputs as (name, title, kind)."""

    id: str
    title: str = ""
    abstract: str = ""
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[tuple[str, str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view for ``describe --json``."""
        return {"id": self.id, "title": self.title, "abstract": self.abstract,
                "inputs": [{"name": i.name, "kind": i.kind, "type": i.data_type, "required": i.required,
                            "max_occurs": i.max_occurs, "allowed": [str(a) for a in i.allowed],
                            "default": i.default, "formats": list(i.formats), "title": i.title} for i in self.inputs],
                "outputs": [{"name": n, "title": t, "kind": k} for n, t, k in self.outputs]}


@dataclass(frozen=True)
class Literal:
    """A literal value, typed as the process declares it."""

    name: str
    value: Any

    def text(self) -> str:
        """The value as WPS sends literals (``true``/``false`` for booleans, JSON for structures)."""
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, (dict, list)):
            return json.dumps(self.value)
        return str(self.value)


@dataclass(frozen=True)
class Complex:
    """A complex value: by reference (``href``) or inline (``data``, base64 when ``encoding`` says so)."""

    name: str
    href: str | None = None
    data: str | None = None
    media_type: str | None = None
    encoding: str | None = None


Value = Literal | Complex


def normalise_type(text: str | None) -> str:
    """A data type name of WPS (``xs:integer``, an XML Schema URL) or JSON Schema, in one vocabulary."""
    if not text:
        return "string"
    word = str(text).rsplit("#", 1)[-1].rsplit(":", 1)[-1].rsplit("/", 1)[-1].strip().lower()
    if word in _INTEGER:
        return "integer"
    if word in _NUMBER:
        return "number"
    if word in _BOOLEAN:
        return "boolean"
    if word in _STRUCTURED:
        return word
    return "string"


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b=x", "b=y"]`` -> ``{"a": "1", "b": ["x", "y"]}``: a repeated name gives a list."""
    found: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValidationError(f"input {item!r}: expected NAME=VALUE")
        if name in found:
            previous = found[name]
            found[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            found[name] = value
    return found


def _names(specs: Sequence[InputSpec]) -> str:
    return ", ".join(s.name for s in specs) or "none"


def _coerce(process: str, spec: InputSpec, value: Any) -> Any:
    """``value`` as the declared literal type; a clear error naming the input if it is not one."""
    kind = spec.data_type
    wrong = ValidationError(f"{process}: input {spec.name!r} must be {_article(kind)}, got {_show(value)}")
    if kind == "integer":
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise wrong from None
    if kind == "number":
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, (int, float)):
            return value
        try:
            number = float(str(value).strip())
        except ValueError:
            raise wrong from None
        return int(number) if str(value).strip().lstrip("+-").isdigit() else number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("true", "1", "yes"):
            return True
        if word in ("false", "0", "no"):
            return False
        raise wrong
    if kind in _STRUCTURED:
        if isinstance(value, (dict, list)):
            return value
        try:
            parsed = json.loads(str(value))
        except ValueError:
            raise wrong from None
        if not isinstance(parsed, dict if kind == "object" else list):
            raise wrong
        return parsed
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _article(kind: str) -> str:
    return {"integer": "an integer", "number": "a number", "boolean": "true or false", "object": "a JSON object",
            "array": "a JSON list"}.get(kind, f"a {kind}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_allowed(process: str, spec: InputSpec, value: Any) -> None:
    if not spec.allowed:
        return
    for option in spec.allowed:
        if option == value or str(option) == str(value):
            return
        try:
            if float(option) == float(value):  # "1" against 1.0
                return
        except (TypeError, ValueError):
            pass
    allowed = ", ".join(str(a) for a in spec.allowed)
    raise ValidationError(f"{process}: input {spec.name!r} does not allow {_show(value)} (allowed: {allowed})")


def _local_file(process: str, spec: InputSpec, text: str, limit: int) -> Path:
    path = Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()
    where = f"{process}: input {spec.name!r}"
    if not path.exists():
        raise ValidationError(f"{where}: {text} is neither an http(s), s3:// or onedata:// URL nor an existing file")
    if not path.is_file():
        raise ValidationError(f"{where}: {text} is not a regular file")
    if not os.access(path, os.R_OK):
        raise ValidationError(f"{where}: {text} is not readable (check its permissions)")
    size = path.stat().st_size
    if size > limit:
        raise ValidationError(f"{where}: {text} is {size / 2**20:.1f} MiB, more than the {limit / 2**20:.0f} MiB "
                              "sent inline; put it on S3 (s3://...) or a web server and pass its URL")
    return path


def _media_type(spec: InputSpec, name: str) -> str | None:
    if spec.formats:
        guessed = mimetypes.guess_type(name)[0]
        return guessed if guessed in spec.formats else spec.formats[0]
    return mimetypes.guess_type(name)[0]


@dataclass(frozen=True)
class _Checked:
    """A complex value checked but not yet made reachable (presigning waits until all inputs pass)."""

    spec: InputSpec
    scheme: str  # http, s3, local, given
    value: Any


def _check_complex(process: str, spec: InputSpec, value: Any, limit: int) -> _Checked:
    where = f"{process}: input {spec.name!r}"
    if isinstance(value, Mapping):  # OGC style from a template: {"href": ...} or {"value": ...}
        if "href" in value:
            return _check_complex(process, spec, value["href"], limit)
        if "value" in value:
            return _Checked(spec, "given", dict(value))
        raise ValidationError(f"{where}: a complex value as a dict needs 'href' or 'value'")
    if not isinstance(value, (str, os.PathLike)):
        raise ValidationError(f"{where}: expected a URL or a file path, got {_show(value)}")
    text = os.fspath(value).strip()
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("http", "https"):
        parts = urlsplit(text)
        if not parts.hostname:
            raise ValidationError(f"{where}: {text} has no host")
        if parts.username or parts.password:
            raise ValidationError(f"{where}: credentials in the URL would reach the service; use a presigned "
                                  "or public URL instead")
        return _Checked(spec, "http", text)
    if scheme in ("s3", "s3a"):
        bucket, _, key = text.split("://", 1)[1].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ValidationError(f"{where}: {text} does not name an object (expected s3://BUCKET/KEY)")
        return _Checked(spec, "s3", text)
    if scheme == "onedata":
        raise ValidationError(f"{where}: the service cannot read {text} directly; in Onedata, share the file "
                              "(Share > Create share, or a public URL) and pass the share's http(s) URL")
    if scheme and scheme != "file":
        raise ValidationError(f"{where}: {scheme}:// inputs are not supported; pass an http(s) URL, an s3:// "
                              "object or a local file")
    return _Checked(spec, "local", _local_file(process, spec, text, limit))


def _reachable(process: str, checked: _Checked, *, profile: str | None, expires: int) -> Complex:
    spec = checked.spec
    if checked.scheme == "http":
        return Complex(spec.name, href=checked.value, media_type=_media_type(spec, urlsplit(checked.value).path))
    if checked.scheme == "s3":
        url = presign(checked.value, process=process, name=spec.name, profile=profile, expires=expires)
        return Complex(spec.name, href=url, media_type=_media_type(spec, checked.value))
    if checked.scheme == "given":
        given = checked.value
        return Complex(spec.name, data=given["value"] if isinstance(given["value"], str) else json.dumps(given["value"]),
                       media_type=given.get("mediaType") or given.get("type") or (spec.formats or (None,))[0],
                       encoding=given.get("encoding"))
    path: Path = checked.value
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"{process}: input {spec.name!r}: cannot read {path}: {exc.strerror}") from None
    media = _media_type(spec, path.name)
    try:
        return Complex(spec.name, data=raw.decode("utf-8"), media_type=media)
    except UnicodeDecodeError:
        return Complex(spec.name, data=base64.b64encode(raw).decode(), media_type=media, encoding="base64")


def presign(url: str, *, process: str = "process", name: str = "input", profile: str | None = None,
            expires: int = PRESIGN_SECONDS) -> str:
    """A presigned GET URL for an ``s3://`` object, checked to exist; registered as a secret."""
    from nbplugins import storage
    from nbplugins.storage.s3 import storage_error

    where = f"{process}: input {name!r}"
    loc = storage.locate(url, profile)
    bucket, _, key = loc.path.partition("/")
    client = loc.s3.client(signature_version="s3v4")  # SigV2 query signing is deprecated
    try:
        client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (403, 404):
            what = "does not exist" if status == 404 else "is not readable with these S3 credentials"
            raise ValidationError(f"{where}: {url} {what}") from None
        raise storage_error(exc, f"{where}: {url}") from None
    signed = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)
    secrets.register(signed, "presigned URL")
    return signed


def prepare(process: str, specs: Sequence[InputSpec], values: Mapping[str, Any], *, inline_limit: int = INLINE_LIMIT,
            profile: str | None = None, expires: int = PRESIGN_SECONDS) -> list[Value]:
    """Check ``values`` against ``specs``, then make each reachable for the service; in declared order.

    Every check runs before any presigning; one :class:`ValidationError` names the first
    input that is wrong. A required input left out that has a default gets its default.
    """
    by_name = {s.name: s for s in specs}
    for name in values:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValidationError(f"{process} has no input {name!r} (inputs: {_names(specs)}){hint}")
    planned: list[tuple[InputSpec, list[Any]]] = []
    for spec in specs:
        given = values.get(spec.name)
        if given is None or (isinstance(given, str) and given == "" and spec.kind != "literal"):
            if spec.required and spec.default is None:
                raise ValidationError(f"{process}: input {spec.name!r} is required"
                                      + (f" ({spec.title})" if spec.title and spec.title != spec.name else ""))
            if spec.required:
                planned.append((spec, [spec.default]))
            continue
        single = spec.kind == "literal" and spec.data_type == "array"  # a list is one value
        items = list(given) if isinstance(given, (list, tuple)) and not single else [given]
        if len(items) < spec.min_occurs:
            raise ValidationError(f"{process}: input {spec.name!r} needs at least {spec.min_occurs} values")
        if spec.max_occurs is not None and len(items) > spec.max_occurs:
            raise ValidationError(f"{process}: input {spec.name!r} takes at most {spec.max_occurs} "
                                  f"value{'s' if spec.max_occurs != 1 else ''}, got {len(items)}")
        planned.append((spec, items))
    checked: list[Literal | _Checked] = []
    for spec, items in planned:
        for item in items:
            if spec.kind == "literal":
                typed = _coerce(process, spec, item)
                _check_allowed(process, spec, typed)
                checked.append(Literal(spec.name, typed))
            elif spec.kind == "complex":
                checked.append(_check_complex(process, spec, item, inline_limit))
            else:
                checked.append(Literal(spec.name, item if isinstance(item, str) else ",".join(map(str, item))))
    return [c if isinstance(c, Literal) else _reachable(process, c, profile=profile, expires=expires) for c in checked]


def close_matches(word: str, choices: Sequence[str], n: int = 5) -> list[str]:
    """The choices most like ``word`` (case-insensitive), for "did you mean" lists."""
    lowered = {c.lower(): c for c in choices}
    return [lowered[m] for m in difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.5)]
