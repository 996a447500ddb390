"""Configuration: one typed object from ``config.toml`` and the environment, environment winning.

The file is ``~/.config/nbplugins/config.toml`` unless ``NBPLUGINS_CONFIG`` names another.
Each section is a dataclass; a field's ``env`` metadata lists the environment variables that
override it, and ``secret`` marks values registered with the scrubber. Unknown keys and
wrong types are errors that name the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbplugins import secrets
from nbplugins.errors import ConfigError

EGI_ISSUER = "https://aai.egi.eu/auth/realms/egi"


def setting(default: Any = None, *, env: tuple[str, ...] = (), secret: bool = False, doc: str = "") -> Any:
    """Declare a config field with the environment variables that override it."""
    meta = {"env": env, "secret": secret, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TokenConfig:
    """Where the EGI Check-in (or other OIDC) access token comes from."""

    source: str | None = setting(env=("NBPLUGINS_TOKEN_SOURCE",), doc="name one source, skip the search")
    file: str | None = setting(env=("NBPLUGINS_TOKEN_FILE",), doc="a token file to read on every use")
    oidc_agent_account: str | None = setting(env=("OIDC_AGENT_ACCOUNT",))
    issuer: str = setting(EGI_ISSUER, env=("NBPLUGINS_OIDC_ISSUER",))
    token_endpoint: str | None = setting(env=("NBPLUGINS_OIDC_TOKEN_ENDPOINT",))
    client_id: str | None = setting(env=("NBPLUGINS_OIDC_CLIENT_ID", "OIDC_CLIENT_ID"))
    client_secret: str | None = setting(env=("NBPLUGINS_OIDC_CLIENT_SECRET", "OIDC_CLIENT_SECRET"), secret=True)
    refresh_token: str | None = setting(env=("NBPLUGINS_OIDC_REFRESH_TOKEN", "OIDC_REFRESH_TOKEN"), secret=True)
    refresh_margin: float = setting(60.0, env=("NBPLUGINS_TOKEN_REFRESH_MARGIN",))
    audience: str | None = setting(doc="expected audience, checked when a service refuses the token")
    required_vo: str | None = setting(env=("NBPLUGINS_VO",), doc="VO the services expect")
    timeout: float = setting(15.0, doc="seconds for one call to the issuer")


@dataclass
class RetryConfig:
    """Defaults of the shared retry-and-poll mechanism."""

    deadline: float = setting(300.0, env=("NBPLUGINS_RETRY_DEADLINE",))
    initial: float = setting(0.5)
    cap: float = setting(30.0)
    error_budget: int = setting(8)


@dataclass
class Config:
    """All of nbplugins' settings; later sections are added here, one dataclass each."""

    token: TokenConfig = field(default_factory=TokenConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    source: str = field(default="defaults", compare=False)


def config_path() -> Path:
    """The config file nbplugins reads: ``$NBPLUGINS_CONFIG`` or the XDG default."""
    explicit = os.environ.get("NBPLUGINS_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "nbplugins" / "config.toml"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; env strings are converted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or value == "" and type(None) in typing.get_args(tp):
            return None
        errors = []
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return {k: _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return build_section(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    shown = "a secret value" if isinstance(value, str) else repr(value)
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {shown}")


def build_section(cls: type, table: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a TOML table, refusing unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    kwargs = {}
    for name, value in table.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
        if known[name].metadata.get("secret") and isinstance(kwargs[name], str):
            secrets.register(kwargs[name], f"{where}.{name}")
    return cls(**kwargs)


def _apply_env(obj: Any, where: str, environ: dict[str, str]) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _apply_env(value, f"{where}.{f.name}" if where else f.name, environ)
            continue
        for var in f.metadata.get("env", ()):
            if environ.get(var):
                coerced = _coerce(environ[var], hints[f.name], f"environment variable {var}")
                if f.metadata.get("secret"):
                    secrets.register(coerced, var)
                setattr(obj, f.name, coerced)
                break


def load(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load the config file (if it exists) and apply environment overrides."""
    environ = dict(os.environ if environ is None else environ)
    file = Path(path) if path is not None else config_path()
    table: dict[str, Any] = {}
    if file.exists():
        try:
            table = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    elif path is not None or environ.get("NBPLUGINS_CONFIG"):
        raise ConfigError(f"{file}: config file not found")
    config = build_section(Config, table, str(file))
    config.source = str(file) if table else "defaults"
    _apply_env(config, "", environ)
    return config


_cached: tuple[tuple[Any, ...], Config] | None = None


def get() -> Config:
    """The process-wide config, reloaded when the file or relevant environment changes."""
    global _cached
    file = config_path()
    try:
        stamp: Any = file.stat().st_mtime_ns
    except OSError:
        stamp = None
    key = (str(file), stamp, tuple(sorted((k, v) for k, v in os.environ.items() if _relevant(k))))
    if _cached is None or _cached[0] != key:
        _cached = (key, load())
    return _cached[1]


def _relevant(name: str) -> bool:
    return name.startswith(("NBPLUGINS_", "OIDC_", "AWS_", "ONEDATA_", "OSCAR_", "DATAMINER_"))
