"""OSCAR's Function Definition Language: read an FDL file (or an OSCAR Hub RO-Crate folder), check it
all before anything is sent, and give back the service definitions to deploy, scripts inlined.

An FDL is ``functions: {oscar: [{<cluster_id>: <service>}, ...]}`` with optional
``storage_providers`` and ``clusters``. Both generations are read: v3 (``replicas``,
``delegation``) and v4 (``federation``); :func:`ignored_fields` says which fields a cluster of
the other generation will drop. Every problem of every service is collected first, so a
multi-service file with one bad service deploys none, and each message names the service,
the field and the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbplugins import secrets
from nbplugins.errors import ValidationError
from nbplugins.files import read_text

#: Longest service name OSCAR accepts (``binding:"max=39"``; Kubernetes adds suffixes to it).
NAME_MAX = 39
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
FDL_NAMES = ("fdl.yml", "fdl.yaml")
CRATE_METADATA = "ro-crate-metadata.json"

TOP_LEVEL = frozenset({"functions", "storage_providers", "clusters"})
#: Fields of a service in the FDL, both generations (OSCAR's ``types.Service``).
COMMON_FIELDS = frozenset({
    "name", "cluster_id", "memory", "cpu", "total_memory", "total_cpu", "enable_gpu", "enable_sgx",
    "image_prefetch", "synchronous", "log_level", "image", "alpine", "file_stage_in", "input", "output",
    "script", "image_pull_secrets", "expose", "environment", "annotations", "vo", "labels",
    "storage_providers", "clusters", "interlink_node_name", "visibility", "allowed_users",
    "isolation_level", "mount", "volume", "rescheduler_threshold",
})
V3_ONLY = frozenset({"replicas", "delegation"})
V4_ONLY = frozenset({"federation"})
SERVICE_FIELDS = COMMON_FIELDS | V3_ONLY | V4_ONLY
STRING_FIELDS = ("name", "image", "memory", "cpu", "total_memory", "total_cpu", "log_level", "vo",
                 "interlink_node_name", "isolation_level", "delegation")
BOOL_FIELDS = ("enable_gpu", "enable_sgx", "image_prefetch", "alpine", "file_stage_in")
VISIBILITY = ("private", "public", "restricted")
PROVIDER_KINDS = ("minio", "s3", "onedata", "webdav", "rucio")
IO_FIELDS = frozenset({"storage_provider", "path", "suffix", "prefix"})
#: Credential fields in storage providers and clusters: registered with the scrubber, never shown.
SECRET_FIELDS = frozenset({"secret_key", "access_key", "token", "password", "auth_password", "refresh_token"})


@dataclass
class Fdl:
    """A checked FDL: where it came from and its services by cluster id, scripts inlined."""

    source: str
    services: list[tuple[str, dict[str, Any]]]
    storage_providers: dict[str, Any] = field(default_factory=dict)
    clusters: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def cluster_ids(self) -> list[str]:
        """The cluster ids the file names, in order of first appearance."""
        return list(dict.fromkeys(cid for cid, _ in self.services))

    def for_cluster(self, cluster_id: str | None) -> list[dict[str, Any]]:
        """The service definitions to send to one cluster: its own, with the shared sections added.

        ``cluster_id`` None is allowed when the file names one cluster id only.
        """
        ids = self.cluster_ids
        if cluster_id is None:
            if len(ids) != 1:
                raise ValidationError(f"{self.source}: the FDL names clusters {', '.join(ids)}; "
                                      "say which one to deploy with --cluster-id ID")
            cluster_id = ids[0]
        if cluster_id not in ids:
            raise ValidationError(f"{self.source}: cluster id {cluster_id!r} is not in the FDL (it names "
                                  f"{', '.join(ids) or 'none'}); pass --cluster-id with one of them")
        chosen = []
        for cid, service in self.services:
            if cid != cluster_id:
                continue
            body = dict(service)
            if self.storage_providers and "storage_providers" not in body:
                body["storage_providers"] = self.storage_providers
            if self.clusters and "clusters" not in body:
                body["clusters"] = self.clusters
            chosen.append(body)
        return chosen


# ----------------------------------------------------------------------------- YAML with lines


def _lines(node: Any, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    """Record the line (1-based) of every mapping key and sequence item under ``path``."""
    import yaml

    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            out[sub] = key.start_mark.line + 1
            _lines(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, path + (index,), out)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The YAML document and the line of every key; invalid YAML is an error naming the line."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationError(f"{source}:{where}: invalid YAML: {problem}") from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _lines(node, (), lines)
    return data, lines


# ----------------------------------------------------------------------------- loading


def find_source(path: str | Path) -> tuple[Path, str]:
    """The FDL file of ``path`` (a file, or an RO-Crate folder holding ``fdl.yml``) and a description."""
    path = Path(path)
    if path.is_dir():
        for name in FDL_NAMES:
            if (path / name).is_file():
                return path / name, _crate_description(path)
        raise ValidationError(f"{path}: a folder without {' or '.join(FDL_NAMES)}; give an FDL file or an "
                              "OSCAR Hub RO-Crate folder (fdl.yml, script.sh, ro-crate-metadata.json)")
    if not path.is_file():
        raise ValidationError(f"{path}: no such FDL file or RO-Crate folder")
    return path, ""


def _crate_description(folder: Path) -> str:
    """The name of an RO-Crate's root dataset, if the folder has readable crate metadata."""
    meta = folder / CRATE_METADATA
    if not meta.is_file():
        return ""
    try:
        graph = json.loads(read_text(meta, "RO-Crate metadata")).get("@graph", [])
    except (ValueError, AttributeError):
        raise ValidationError(f"{meta}: not valid RO-Crate JSON-LD") from None
    for item in graph if isinstance(graph, list) else []:
        if isinstance(item, dict) and item.get("@id") == "./":
            return str(item.get("name") or item.get("description") or "")
    return ""


def load(path: str | Path) -> Fdl:
    """Read and check an FDL file or RO-Crate folder; one :class:`ValidationError` lists every problem."""
    fdl_path, description = find_source(path)
    source = str(fdl_path)
    data, lines = parse_yaml(read_text(fdl_path, "FDL file"), source)
    checker = _Checker(source, lines, fdl_path.parent)
    fdl = checker.check(data)
    fdl.description = description
    if checker.problems:
        shown = checker.problems[:8]
        more = len(checker.problems) - len(shown)
        raise ValidationError(f"{source}: nothing deployed, the FDL has {len(checker.problems)} "
                              f"problem{'s' if len(checker.problems) > 1 else ''}: " + "; ".join(shown)
                              + (f"; and {more} more" if more else ""))
    register_secrets(fdl.storage_providers)
    register_secrets(fdl.clusters)
    for _, service in fdl.services:
        register_secrets(service.get("storage_providers"))
        register_secrets(service.get("clusters"))
        register_secrets((service.get("environment") or {}).get("secrets"), every_value=True)
    return fdl


def register_secrets(section: Any, *, every_value: bool = False) -> None:
    """Register every credential in a section (and every value, for ``environment.secrets``)."""
    if isinstance(section, dict):
        for key, value in section.items():
            if isinstance(value, (dict, list)):
                register_secrets(value, every_value=every_value)
            elif isinstance(value, str) and (every_value or key in SECRET_FIELDS):
                secrets.register(value, f"OSCAR {key}")
    elif isinstance(section, list):
        for item in section:
            register_secrets(item, every_value=every_value)


def ignored_fields(service: dict[str, Any], version: str | None) -> list[str]:
    """Fields of ``service`` that a cluster of ``version`` ignores (the other FDL generation's)."""
    major = major_version(version)
    if major is None:
        return []
    other = V3_ONLY if major >= 4 else V4_ONLY
    return sorted(k for k in service if k in other)


def major_version(version: str | None) -> int | None:
    """3 for ``v3.6.2`` or ``3.5.0``, 4 for ``v4.1.0``; None when unknown (``devel``)."""
    found = re.match(r"v?(\d+)", str(version or "").strip())
    return int(found.group(1)) if found else None


def generation_note(name: str, fields: Iterable[str], version: str | None) -> str:
    """A message naming the fields a cluster will ignore, and what it wants instead."""
    fields = list(fields)
    if not fields:
        return ""
    major = major_version(version)
    instead = "federation" if major and major >= 4 else "replicas and delegation"
    return (f"service {name!r}: OSCAR {version} ignores {', '.join(fields)} "
            f"(a {'v3' if major and major >= 4 else 'v4'} FDL field); this cluster uses {instead}")


# ----------------------------------------------------------------------------- checking


class _Checker:
    """Collects every problem of an FDL with its line; builds the services to send."""

    def __init__(self, source: str, lines: dict[tuple[Any, ...], int], folder: Path) -> None:
        self.source = source
        self.lines = lines
        self.folder = folder
        self.problems: list[str] = []

    def line(self, path: tuple[Any, ...]) -> str:
        while path and path not in self.lines:
            path = path[:-1]
        number = self.lines.get(path)
        return f"line {number}: " if number else ""

    def problem(self, path: tuple[Any, ...], text: str) -> None:
        self.problems.append(f"{self.line(path)}{text}")

    def check(self, data: Any) -> Fdl:
        fdl = Fdl(self.source, [])
        if not isinstance(data, dict):
            self.problem((), "the file is not a YAML mapping with a 'functions' section")
            return fdl
        for key in data:
            if key not in TOP_LEVEL:
                self.problem((key,), f"unknown top-level field {key!r} (known: {', '.join(sorted(TOP_LEVEL))})")
        providers = data.get("storage_providers") or {}
        if not isinstance(providers, dict):
            self.problem(("storage_providers",), "storage_providers must be a mapping of kind -> name -> settings")
            providers = {}
        for kind, named in providers.items():
            if kind not in PROVIDER_KINDS:
                self.problem(("storage_providers", kind), f"unknown storage provider kind {kind!r} "
                             f"(known: {', '.join(PROVIDER_KINDS)})")
            elif not isinstance(named, dict):
                self.problem(("storage_providers", kind), f"storage_providers.{kind} must map names to settings")
        clusters = data.get("clusters") or {}
        if not isinstance(clusters, dict):
            self.problem(("clusters",), "clusters must be a mapping of cluster id -> endpoint settings")
            clusters = {}
        fdl.storage_providers, fdl.clusters = providers, clusters
        functions = data.get("functions")
        oscar = functions.get("oscar") if isinstance(functions, dict) else None
        if not isinstance(oscar, list) or not oscar:
            self.problem(("functions",), "expected functions: {oscar: [{CLUSTER_ID: {name: ..., image: ..., "
                         "script: ...}}]}")
            return fdl
        if isinstance(functions, dict):
            for key in functions:
                if key != "oscar":
                    self.problem(("functions", key), f"unknown function platform {key!r} (only 'oscar')")
        names: dict[str, int] = {}
        for index, element in enumerate(oscar):
            where = ("functions", "oscar", index)
            if not isinstance(element, dict) or len(element) != 1:
                self.problem(where, f"functions.oscar item {index + 1} must be one mapping CLUSTER_ID: SERVICE")
                continue
            cluster_id, service = next(iter(element.items()))
            if not isinstance(service, dict):
                self.problem(where, f"functions.oscar item {index + 1} ({cluster_id}) is not a service mapping")
                continue
            body = self.service(service, where + (cluster_id,), str(cluster_id), providers, clusters)
            name = body.get("name")
            if isinstance(name, str):
                key = f"{cluster_id}/{name}"
                if key in names:
                    self.problem(where, f"service {name!r} appears twice for cluster {cluster_id!r}")
                names[key] = index
            fdl.services.append((str(cluster_id), body))
        return fdl

    def service(self, svc: dict[str, Any], path: tuple[Any, ...], cluster_id: str,
                providers: dict[str, Any], clusters: dict[str, Any]) -> dict[str, Any]:
        name = svc.get("name")
        label = f"service {name!r}" if isinstance(name, str) and name else f"service {path[2] + 1} ({cluster_id})"
        body = dict(svc)
        for key in svc:
            if key not in SERVICE_FIELDS:
                self.problem(path + (key,), f"{label}: unknown field {key!r}")
        for key in ("name", "image", "script"):
            if svc.get(key) in (None, ""):
                self.problem(path, f"{label}: missing required field {key!r}")
        for key in STRING_FIELDS:
            if key in svc and svc[key] is not None and not isinstance(svc[key], str):
                hint = f" (quote it: {key}: \"{svc[key]}\")" if key in ("cpu", "memory") else ""
                self.problem(path + (key,), f"{label}: {key} must be a string{hint}")
        for key in BOOL_FIELDS:
            if key in svc and not isinstance(svc[key], bool):
                self.problem(path + (key,), f"{label}: {key} must be true or false")
        if isinstance(name, str) and name:
            if len(name) > NAME_MAX:
                self.problem(path + ("name",), f"{label}: the name has {len(name)} characters; OSCAR allows at "
                             f"most {NAME_MAX}")
            if not DNS_LABEL.match(name):
                self.problem(path + ("name",), f"{label}: the name must be a lowercase DNS label (a-z, 0-9 and "
                             "'-', starting and ending with a letter or digit)")
        if "visibility" in svc and svc["visibility"] not in VISIBILITY:
            self.problem(path + ("visibility",), f"{label}: visibility must be one of {', '.join(VISIBILITY)}")
        if "allowed_users" in svc and not _str_list(svc["allowed_users"]):
            self.problem(path + ("allowed_users",), f"{label}: allowed_users must be a list of user ids")
        sync = svc.get("synchronous")
        if sync is not None and (not isinstance(sync, dict) or any(
                k not in ("min_scale", "max_scale") or not isinstance(v, int) or isinstance(v, bool)
                for k, v in sync.items())):
            self.problem(path + ("synchronous",), f"{label}: synchronous takes integers min_scale and max_scale")
        self.environment(svc.get("environment"), path + ("environment",), label, body)
        for key in ("annotations", "labels"):
            if key in svc and not (isinstance(svc[key], dict) and all(isinstance(v, str) for v in svc[key].values())):
                self.problem(path + (key,), f"{label}: {key} must map names to strings")
        for key in ("input", "output"):
            self.storage_io(svc.get(key), path + (key,), f"{label} {key}", providers)
        if "mount" in svc:
            self.storage_io([svc["mount"]], path + ("mount",), f"{label} mount", providers)
        for index, replica in enumerate(svc.get("replicas") or []):
            cid = replica.get("cluster_id") if isinstance(replica, dict) else None
            if isinstance(replica, dict) and replica.get("type", "oscar") == "oscar" and cid not in clusters:
                self.problem(path + ("replicas", index), f"{label}: replica cluster_id {cid!r} is not in the FDL's "
                             "clusters section")
        script = svc.get("script")
        if isinstance(script, str) and script:
            body["script"] = self.script(script, path + ("script",), label)
        elif script not in (None, ""):
            self.problem(path + ("script",), f"{label}: script must be the path of a script file")
        if isinstance(body.get("log_level"), str):
            body["log_level"] = body["log_level"].upper()  # as OSCAR stores it, so a redeploy finds no change
        body.setdefault("cluster_id", cluster_id)
        return body

    def environment(self, env: Any, path: tuple[Any, ...], label: str, body: dict[str, Any]) -> None:
        if env is None:
            return
        if not isinstance(env, dict) or any(k not in ("variables", "secrets") for k in env):
            self.problem(path, f"{label}: environment takes 'variables' and 'secrets' mappings only")
            return
        fixed: dict[str, Any] = {}
        for part in ("variables", "secrets"):
            values = env.get(part)
            if values is None:
                continue
            if not isinstance(values, dict) or any(isinstance(v, (dict, list)) for v in values.values()):
                self.problem(path + (part,), f"{label}: environment.{part} must map names to plain values")
                continue
            # OSCAR holds them as strings; a YAML number or boolean is sent as its text
            fixed[part] = {str(k): _scalar_text(v) for k, v in values.items()}
        body["environment"] = fixed

    def storage_io(self, items: Any, path: tuple[Any, ...], label: str, providers: dict[str, Any]) -> None:
        if items is None:
            return
        if not isinstance(items, list):
            self.problem(path, f"{label} must be a list of {{storage_provider, path}}")
            return
        for index, item in enumerate(items):
            where = path + (index,)
            if not isinstance(item, dict):
                self.problem(where, f"{label} item {index + 1} must be a mapping")
                continue
            for key in item:
                if key not in IO_FIELDS:
                    self.problem(where + (key,), f"{label}: unknown field {key!r} (known: {', '.join(sorted(IO_FIELDS))})")
            if not isinstance(item.get("path"), str) or not item["path"].strip("/"):
                self.problem(where, f"{label} item {index + 1}: path must be BUCKET/FOLDER")
            for key in ("suffix", "prefix"):
                if key in item and not _str_list(item[key]):
                    self.problem(where + (key,), f"{label}: {key} must be a list of strings")
            provider = item.get("storage_provider", "minio.default")
            if not isinstance(provider, str):
                self.problem(where, f"{label}: storage_provider must be KIND.NAME, such as minio.default")
                continue
            kind, _, pname = provider.partition(".")
            pname = pname or "default"
            if kind not in PROVIDER_KINDS:
                self.problem(where + ("storage_provider",), f"{label}: unknown storage provider {provider!r} "
                             f"(KIND.NAME with KIND one of {', '.join(PROVIDER_KINDS)})")
            elif not (kind == "minio" and pname == "default") and pname not in (providers.get(kind) or {}):
                self.problem(where + ("storage_provider",), f"{label}: storage provider {provider!r} is not "
                             "defined in the FDL's storage_providers")

    def script(self, script: str, path: tuple[Any, ...], label: str) -> str:
        target = Path(script)
        if not target.is_absolute():
            target = self.folder / target
        if not target.is_file():
            self.problem(path, f"{label}: script file {script} not found (looked at {target})")
            return script
        try:
            return target.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(path, f"{label}: cannot read script file {script}: {type(exc).__name__}")
            return script


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
