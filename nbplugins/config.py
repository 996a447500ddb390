"""Configuration: one typed object from ``config.toml`` and the environment, environment winning.

The file is ``~/.config/nbplugins/config.toml`` unless ``NBPLUGINS_CONFIG`` names another.
Each section is a dataclass; a field's ``env`` metadata lists the environment variables that
override it, and ``secret`` marks values registered with the scrubber. Unknown keys and
wrong types are errors that name the file, the section and the key (or the variable) and the
expected type, never the value: a value in the wrong place may be a secret.

Two readings live here because every module shares them: :func:`parse_bool`, the one way a
boolean is read from text, and :func:`retry_policy`, the retry policy of the ``[retry]``
section (installed as :meth:`nbplugins.retry.Retry.from_config`'s default, so retry needs no config).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbplugins import files, secrets
from nbplugins.errors import ConfigError
from nbplugins.retry import Retry, set_default_policy

EGI_ISSUER = "https://aai.egi.eu/auth/realms/egi"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(text: str) -> bool:
    """The one reading of a boolean written as text (env vars, tables, pipeline parameters).

    ``1/true/yes/on`` and ``0/false/no/off``, any case, spaces around ignored; anything else
    raises ValueError, so a typo is reported instead of read as false.
    """
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


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
class S3Profile:
    """One named S3 endpoint (``[s3.NAME]``) and where its keys come from."""

    endpoint_url: str | None = setting(doc="S3 endpoint; AWS when unset")
    region: str | None = setting(doc="signing region (us-east-1 when unset)")
    access_key_id: str | None = setting(secret=True)
    secret_access_key: str | None = setting(secret=True)
    session_token: str | None = setting(secret=True)
    credentials: str = setting("auto", doc="auto, static, env, keystone or aws (botocore's own chain)")
    aws_profile: str | None = setting(doc="profile in ~/.aws for credentials = aws")
    path_style: bool | None = setting(doc="path-style addressing; on by default for non-AWS endpoints")
    checksum: str | None = setting(doc="when_required or when_supported; when_required for non-AWS")
    concurrency: int = setting(16, doc="parallel requests per transfer")
    max_pool_connections: int | None = setting(doc="HTTP connection pool size (concurrency + 4 when unset)")
    part_size_mib: int = setting(8, doc="multipart part and download range size")
    connect_timeout: float = setting(10.0)
    read_timeout: float = setting(60.0)
    verify: bool = setting(True, doc="verify TLS certificates")
    ca_bundle: str | None = setting(doc="CA bundle file for a private endpoint")
    keystone_url: str | None = setting(doc="Keystone v3 URL for the OIDC -> EC2 credential exchange")
    project_id: str | None = setting(doc="OpenStack project the EC2 credential belongs to")
    identity_provider: str = setting("egi.eu")
    protocol: str = setting("openid")
    site: str | None = setting(doc="an [openstack.sites.NAME] whose Keystone and project the EC2 exchange uses")


@dataclass
class StorageConfig:
    """Storage defaults: the S3 profile used when none is named, and remote-save pacing."""

    profile: str | None = setting(env=("NBPLUGINS_S3_PROFILE",), doc="default [s3.NAME] profile")
    save_interval: float = setting(30.0, env=("NBPLUGINS_SAVE_INTERVAL",),
                                   doc="seconds between remote saves of a running notebook")


@dataclass
class OnedataConfig:
    """Onedata (``onedata://space/path``): Onezone, Oneprovider, token and transfer sizes."""

    zone: str = setting("https://datahub.egi.eu", env=("ONEDATA_ZONE", "ONEZONE_HOST"),
                        doc="Onezone URL or host (mints tokens, finds the provider of a space)")
    provider: str | None = setting(env=("ONEDATA_PROVIDER", "ONEPROVIDER_HOST", "ONECLIENT_PROVIDER_HOST"),
                                   doc="Oneprovider URL or host; found through Onezone when unset")
    token: str | None = setting(env=("ONEDATA_TOKEN", "ONEDATA_ACCESS_TOKEN"), secret=True,
                                doc="Onedata REST access token; minted from the Check-in token when unset")
    verify: str = setting("true", env=("ONEDATA_VERIFY",), doc="true, false or a CA bundle path")
    block_size_mib: int = setting(8, env=("ONEDATA_BLOCK_SIZE_MIB",), doc="read block and write chunk size")
    concurrency: int = setting(4, doc="parallel ranged requests in get/put of one file")
    timeout: float = setting(120.0, doc="seconds to wait for one response")
    token_ttl: int = setting(12 * 3600, doc="lifetime of a token minted at Onezone, seconds")
    idp: str = setting("egi", doc="Onezone's name of the IdP of the Check-in token")


@dataclass
class HubsConfig:
    """JupyterHubs that ``nbplugins link`` knows by name, besides the built-in ones."""

    default: str | None = setting(env=("NBPLUGINS_HUB",), doc="hub name or URL used without --hub")
    eosc: str | None = setting(env=("NBPLUGINS_EOSC_HUB_URL",), doc="EOSC EU Node notebooks hub URL")
    urls: dict[str, str] = setting({}, doc="more hubs by name: [hubs.urls] workshop = \"https://...\"")
    allow_local_repos: bool = setting(False, env=("NBPLUGINS_LINK_ALLOW_LOCAL",),
                                      doc="accept local paths / file:// repos in links (tests only)")


D4SCIENCE_KEYCLOAK = "https://accounts.d4science.org/auth/realms/d4science/protocol/openid-connect/token"


@dataclass
class D4ScienceConfig:
    """D4Science: DataMiner (WPS), the VRE token and context, and the UMA grant for CCP."""

    dataminer_url: str | None = setting(env=("DATAMINER_URL",), doc="DataMiner WPS endpoint")
    token: str | None = setting(env=("D4SCIENCE_TOKEN", "GCUBE_TOKEN"), secret=True,
                                doc="VRE token: a JWT (Bearer) or a legacy gcube token (gcube-token header)")
    context: str | None = setting(env=("D4SCIENCE_CONTEXT", "GCUBE_CONTEXT"),
                                  doc="VRE context, e.g. /d4science.research-infrastructures.eu/D4OS/MyVRE")
    token_endpoint: str = setting(D4SCIENCE_KEYCLOAK, env=("D4SCIENCE_TOKEN_ENDPOINT",),
                                  doc="Keycloak token endpoint of the UMA grant")
    trusted_hosts: list[str] = setting([], doc="more hosts that may receive the token with result links")
    verify: bool = setting(True, doc="verify TLS certificates")
    timeout: float = setting(3600.0, doc="seconds to wait for a job")


@dataclass
class ProcessesService:
    """One OGC API - Processes service (``[processes.NAME]``): CCP, pygeoapi, an ADES."""

    url: str = setting("", doc="landing page (the base of /processes and /jobs)")
    auth: str = setting("none", doc="none, bearer (token below or the hub token), uma (D4Science CCP)")
    token: str | None = setting(secret=True, doc="a static Bearer token")
    context: str | None = setting(doc="UMA audience (the VRE context); [d4science] context when unset")
    token_endpoint: str | None = setting(doc="UMA token endpoint; [d4science] token_endpoint when unset")
    trusted_hosts: list[str] = setting([], doc="more hosts that may receive the token with result links")
    verify: bool = setting(True, doc="verify TLS certificates")


@dataclass
class OscarCluster:
    """One OSCAR cluster (``[oscar.clusters.NAME]``)."""

    endpoint: str = setting("", doc="cluster URL")
    auth: str = setting("oidc", doc="basic (user and password) or oidc (the hub token)")
    user: str | None = setting()
    password: str | None = setting(secret=True)
    ssl_verify: bool = setting(True, doc="verify TLS certificates")


@dataclass
class OscarConfig:
    """OSCAR clusters by name; the environment gives the cluster used when none is named."""

    default: str | None = setting(env=("NBPLUGINS_OSCAR_CLUSTER",), doc="cluster name used without --cluster")
    endpoint: str | None = setting(env=("OSCAR_ENDPOINT",), doc="cluster URL when no cluster is named")
    user: str | None = setting(env=("OSCAR_USER",))
    password: str | None = setting(env=("OSCAR_PASSWORD",), secret=True)
    ssl_verify: bool = setting(True, env=("OSCAR_SSL_VERIFY",))
    clusters: dict[str, OscarCluster] = setting({}, doc="[oscar.clusters.NAME] tables")


@dataclass
class OpenStackSite:
    """One OpenStack site (``[openstack.sites.NAME]``) reached with the Check-in token."""

    auth_url: str = setting("", doc="Keystone v3 URL")
    project_id: str | None = setting(doc="project to scope to (32 hex characters)")
    region: str | None = setting()
    identity_provider: str = setting("egi.eu")
    protocol: str = setting("openid")
    verify: bool = setting(True, doc="verify TLS certificates")


@dataclass
class OpenStackConfig:
    """OpenStack sites by name; S3 profiles with ``credentials = "keystone"`` may name one."""

    default: str | None = setting(env=("NBPLUGINS_OPENSTACK_SITE",), doc="site used without --site")
    sites: dict[str, OpenStackSite] = setting({}, doc="[openstack.sites.NAME] tables")


@dataclass
class ServeConfig:
    """The provisioning service (``nbplugins serve``): secrets it needs, never on the command line."""

    hub_api_token: str | None = setting(env=("NBPLUGINS_HUB_API_TOKEN", "JUPYTERHUB_API_TOKEN"), secret=True,
                                        doc="JupyterHub service token for the hub backend")
    templates: str | None = setting(doc="a catalogue folder of templates besides templates/")


@dataclass
class Config:
    """All of nbplugins' settings; later sections are added here, one dataclass each."""

    token: TokenConfig = field(default_factory=TokenConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    s3: dict[str, S3Profile] = field(default_factory=dict)
    onedata: OnedataConfig = field(default_factory=OnedataConfig)
    hubs: HubsConfig = field(default_factory=HubsConfig)
    d4science: D4ScienceConfig = field(default_factory=D4ScienceConfig)
    processes: dict[str, ProcessesService] = field(default_factory=dict)
    oscar: OscarConfig = field(default_factory=OscarConfig)
    openstack: OpenStackConfig = field(default_factory=OpenStackConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    source: str = field(default="defaults", compare=False)


def cache_root() -> Path:
    """Where nbplugins keeps what it can rebuild (exchanged keys, upload state): ``$XDG_CACHE_HOME/nbplugins``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nbplugins"


def config_path() -> Path:
    """The config file nbplugins reads: ``$NBPLUGINS_CONFIG`` or the XDG default."""
    explicit = os.environ.get("NBPLUGINS_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "nbplugins" / "config.toml"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


def _kind(value: Any) -> str:
    """What a value is, never the value itself: a misplaced one may be a secret."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return kinds.get(type(value), f"a {type(value).__name__}")


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
            raise ConfigError(f"{where}: expected a table, got {_kind(value)}")
        return {k: _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_kind(value)}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_kind(value)}")
        return build_section(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return parse_bool(value)
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
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_kind(value)}")


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
            table = tomllib.loads(files.read_text(file, "the config file is TOML text", ConfigError))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
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
    return name.startswith(("NBPLUGINS_", "OIDC_", "AWS_", "ONEDATA_", "OSCAR_", "DATAMINER_",
                            "ONEZONE_", "ONEPROVIDER_", "ONECLIENT_", "D4SCIENCE_", "GCUBE_",
                            "JUPYTERHUB_API_TOKEN"))


def retry_policy(**overrides: Any) -> Retry:
    """The shared retry policy from the ``[retry]`` section, with call-site overrides."""
    section = get().retry
    base = Retry(deadline=section.deadline, initial=section.initial, cap=section.cap,
                 error_budget=section.error_budget)
    return base.with_(**overrides)


set_default_policy(retry_policy)  # Retry.from_config() builds on this section


def reference() -> list[tuple[str, str, str, str]]:
    """Every setting as (key, type, default, notes: environment variables, doc, secret), for the README."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or (cls is Config and f.name == "source"):
                continue
            tp = hints[f.name]
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")
                continue
            origin = typing.get_origin(tp)
            if origin is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
                walk(typing.get_args(tp)[1], f"{key}.NAME.")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            shown = "" if default in (None, "", [], {}) else json_like(default)
            env = ", ".join(f"`{v}`" for v in f.metadata.get("env", ()))
            secret = "secret: registered with the scrubber" if f.metadata.get("secret") else ""
            notes = (env, f.metadata.get("doc", ""), secret)
            rows.append((key, _type_label(tp), shown, "; ".join(p for p in notes if p)))

    walk(Config, "")
    return rows


def _type_label(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_label(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"list of {_type_label(typing.get_args(tp)[0])}"
    if origin is dict:
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, _type_name(tp))


def reference_markdown() -> str:
    """:func:`reference` as the Markdown table the README shows."""
    lines = ["| key | type | default | environment; notes |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {tp} | {f'`{default}`' if default else ''} | {notes} |"
              for key, tp, default, notes in reference()]
    return "\n".join(lines) + "\n"


def json_like(value: Any) -> str:
    """A default as TOML would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
