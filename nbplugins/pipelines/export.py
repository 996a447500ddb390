"""Export a pipeline to Kubeflow Pipelines (YAML) or Apache Airflow (DAG file) through Elyra's exporters.

``elyra-pipeline export`` does the work; this module prepares what it needs and fixes what
it gets wrong:

* a runtime configuration generated from an nbplugins S3 profile, written into a private
  temporary Jupyter data/config directory (``JUPYTER_DATA_DIR`` / ``JUPYTER_CONFIG_DIR`` of the
  subprocess), so nothing lands in the user's own Jupyter folders;
* object-storage credentials as a Kubernetes secret (``cos_auth_type`` KUBERNETES_SECRET): they
  are used to upload the node archives during the export, never written to the exported file
  (Elyra writes them in plain text otherwise, elyra issue #3164); the nodes read them from
  the ``cos_secret`` Kubernetes secret (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``);
* node env values that reference secrets (``@env:NAME``, ``@oidc``, ``@file:PATH``) become
  Kubernetes secret references (already in the ``.pipeline`` file; checked again here);
* papermill parameters, which Elyra's bootstrappers never pass, are baked into a copy of each
  notebook as an injected-parameters cell; pipeline parameters become Elyra's Kubeflow
  pipeline parameters (passed to the containers as environment variables) and the injected
  cell reads them from there, so ``--param`` works on Kubeflow at submit time too. Airflow has
  no pipeline parameters in Elyra: their values (defaults or ``--param``) are baked in;
* the staged node files are scrubbed before Elyra archives and uploads them: credentials in
  notebook outputs and metadata are replaced (the notebooks on disk are left as they are); a
  credential in code or in any other file refuses the export, naming the node;
* the exported text is scanned for every credential value before it is moved into place.

Airflow: ``elyra-pipeline export`` writes the DAG file locally and pushes nothing (only
``submit`` talks to the git host), but Elyra's runtime schema requires the git fields, so they
are filled with placeholders that the export never uses.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbplugins import files, paths, secrets
from nbplugins.errors import ConfigError, ExecutionError, ValidationError
from nbplugins.papermill import injected
from nbplugins.pipelines import elyra, folders
from nbplugins.pipelines.model import PARAM_REF, Pipeline, references, substitute
from nbplugins.pipelines.parameters import resolve_parameters
from nbplugins.references import is_reference, resolve_reference

log = logging.getLogger(__name__)

TARGETS = {"kfp": ("kfp", "KUBEFLOW_PIPELINES", "yaml"), "airflow": ("airflow", "APACHE_AIRFLOW", "py")}
RUNTIME_NAME = "nbplugins-export"


def elyra_pipeline() -> str:
    """The ``elyra-pipeline`` command beside this interpreter, or on PATH."""
    candidate = Path(sys.executable).parent / "elyra-pipeline"
    found = str(candidate) if candidate.exists() else shutil.which("elyra-pipeline")
    if not found:
        raise ConfigError("elyra-pipeline is not installed: pip install 'nbplugins[elyra]'")
    return found


def elyra_env(home: str | os.PathLike[str]) -> dict[str, str]:
    """Environment for an Elyra subprocess whose Jupyter dirs are all inside ``home``."""
    home = Path(home)
    env = dict(os.environ)
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_RUNTIME_DIR", "runtime")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env.pop("JUPYTER_PATH", None)
    return env


# ----------------------------------------------------------------------------- credentials


def storage_settings(s3_profile: str | None) -> dict[str, Any]:
    """Endpoint and keys for the node archives: the S3 profile as the storage layer resolves it
    (file, ``AWS_*`` environment, keys derived through Keystone), so export uploads where
    ``nbplugins data`` and the kernels write."""
    from nbplugins.storage import s3

    settings = s3.resolve(s3_profile)
    endpoint, key, secret = settings.endpoint_url, settings.access_key_id, settings.secret_access_key
    if not endpoint:
        raise ConfigError("export needs an object storage endpoint: set endpoint_url in an [s3.NAME] profile "
                          "(--s3-profile NAME) or AWS_ENDPOINT_URL_S3")
    if not (key and secret):
        raise ConfigError(f"export needs object storage keys to upload the node archives to {endpoint}: "
                          "set them in the S3 profile or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    secrets.register(key, "cos_username")
    secrets.register(secret, "cos_password")
    return {"endpoint": endpoint, "key": key, "secret": secret, "profile": settings.name}


def runtime_config(target: str, storage: Mapping[str, Any], *, bucket: str, cos_secret: str,
                   endpoint: str | None, namespace: str | None) -> dict[str, Any]:
    """Elyra runtime metadata (schema ``kfp`` or ``airflow``) with Kubernetes-secret storage auth."""
    schema, runtime_type, _ = TARGETS[target]
    meta: dict[str, Any] = {
        "runtime_type": runtime_type,
        "description": "generated by nbplugins for one export",
        "cos_endpoint": storage["endpoint"],
        "cos_bucket": bucket,
        "cos_auth_type": "KUBERNETES_SECRET",
        "cos_secret": cos_secret,
        "cos_username": storage["key"],
        "cos_password": storage["secret"],
        "tags": [],
    }
    if target == "kfp":
        meta.update(api_endpoint=endpoint or "http://ml-pipeline.kubeflow.svc.cluster.local:8888",
                    engine="Argo", auth_type="NO_AUTHENTICATION", user_namespace=namespace or "kubeflow")
    else:
        meta.update(api_endpoint=endpoint or "http://airflow-webserver.airflow.svc.cluster.local:8080",
                    user_namespace=namespace or "default", git_type="GITHUB",
                    github_api_endpoint="https://api.github.com",
                    # placeholders: Elyra's schema requires them, only `submit` (not export) uses them
                    github_repo="nbplugins/unused-by-export", github_branch="main",
                    github_repo_token="unused-by-export")
    return {"display_name": RUNTIME_NAME, "schema_name": schema, "metadata": meta}


# ----------------------------------------------------------------------------- staging


def _bake(source: Path, target: Path, literal: Mapping[str, Any], from_env: Mapping[str, tuple[str, Any]],
          secret_env: Mapping[str, str]) -> None:
    """Copy a notebook with the injected-parameters cell the node needs (see :mod:`..papermill.injected`)."""
    import nbformat

    nb = nbformat.read(str(source), as_version=4)
    kernel = nb.metadata.get("kernelspec", {})
    language = kernel.get("language") or nb.metadata.get("language_info", {}).get("name") or "python"
    code = injected.source(kernel.get("name") or "python3", language, literal, from_env=from_env, secret_env=secret_env)
    injected.inject(nb, code)
    nbformat.write(nb, str(target))


_SCAN_CHUNK, _SCAN_OVERLAP = 8 << 20, 256 << 10  # bytes; the overlap outlasts any form of a secret


def _holds_secret(path: Path) -> bool:
    """Whether a file holds a registered secret in any form (read in overlapping chunks)."""
    tail = ""
    with open(path, "rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK):
            text = tail + chunk.decode("latin-1")  # byte for byte: ASCII forms match in any file
            if secrets.registered_in(text):
                return True
            tail = text[-_SCAN_OVERLAP:]
    return False


def _scrub_node(folder: Path, label: str) -> int:
    """Scrub the staged copy of a node's files before Elyra archives and uploads them.

    Notebooks lose every credential in their outputs and metadata (an old output holding a
    token); code cannot be scrubbed without breaking the node, so a secret in a notebook's
    source or in any other file refuses the export, naming the node and the file.
    """
    import nbformat

    total = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        nb = None
        if path.suffix == ".ipynb":
            with contextlib.suppress(Exception):  # not a readable notebook: scanned like any other file
                nb = nbformat.read(str(path), as_version=4)
        if nb is not None:
            if any(secrets.registered_in("".join(cell.get("source", ""))) for cell in nb.cells):
                raise ValidationError(f"node {label!r}: {rel} holds a credential value in its code; read it "
                                      "from a secret reference (@env:NAME, @file:PATH, @oidc) instead")
            count = secrets.redact_notebook(nb, sources=False)
            if count:
                scrubbed = path.with_name(f".{path.name}.scrubbed")
                nbformat.write(nb, str(scrubbed))
                os.replace(scrubbed, path)  # a new file: never writes through a link to the original
                log.warning("node %r: scrubbed %d credential value(s) from the outputs of %s before upload "
                            "(the notebook on disk still holds them: clear its outputs)", label, count, rel)
                total += count
        elif _holds_secret(path):
            raise ValidationError(f"node {label!r}: {rel} holds a credential value; remove it before exporting")
    return total


def stage(pipeline: Pipeline, workspace: Path, target: str, values: Mapping[str, Any]) -> Path:
    """Write a self-contained copy of the pipeline for Elyra to export; returns its .pipeline path."""
    staged = copy.deepcopy(pipeline)
    staged.base_dir = workspace
    kfp = target == "kfp"
    names = pipeline.folders()  # the same safe, unique names as the runner's node folders
    for node, original in zip(staged.nodes, pipeline.nodes, strict=True):
        src = pipeline.path_of(original)
        folder = workspace / "nodes" / names[node.label]
        folder.mkdir(parents=True)
        for dep in node.dependencies:
            for path in folders.matches(src.parent, dep, recursive=node.include_subdirectories):
                folders.copy(path, paths.inside(folder, path.relative_to(src.parent), f"node {node.label!r}: dependencies entry"))
        node.filename = f"nodes/{folder.name}/{src.name}"
        extra_secrets: list[dict[str, str]] = []
        if node.kind != "notebook":
            shutil.copy2(src, folder / src.name)
        else:
            literal, from_env, secret_env = {}, {}, {}
            declared = elyra.declared(src) or {}
            for name, value in node.parameters.items():
                ref = PARAM_REF.match(value) if isinstance(value, str) else None
                if ref and kfp:
                    from_env[name] = (ref.group(1), values[ref.group(1)])
                elif ref or references(value):  # Kubeflow parameters are whole values; the rest is baked
                    literal[name] = substitute(value, values)
                elif is_reference(value):
                    var = elyra.secret_key(value)
                    secret_env[name] = var
                    extra_secrets.append({"env_var": var, "name": staged.secret_name, "key": var})
                else:
                    literal[name] = value[1:] if isinstance(value, str) and value.startswith("@@") else value
            for name in node.pipeline_parameters:
                if name in declared and name not in node.parameters:
                    if kfp:
                        from_env[name] = (name, values[name])
                    else:
                        literal[name] = values[name]
            _bake(src, folder / src.name, literal, from_env, secret_env)
        _scrub_node(folder, node.label)  # before Elyra archives and uploads the folder
        node.parameters = {}
        known = {s["env_var"] for s in node.kubernetes_secrets}
        node.kubernetes_secrets += [s for s in extra_secrets if s["env_var"] not in known]
        if not kfp:
            node.pipeline_parameters = []
    doc = elyra.to_dict(staged)
    primary = doc["pipelines"][0]
    primary["app_data"].pop("nbplugins", None)
    for raw in primary["nodes"]:
        raw["app_data"].pop("nbplugins", None)
    if kfp:
        primary["app_data"]["runtime_type"] = "KUBEFLOW_PIPELINES"
        primary["app_data"]["properties"]["runtime"] = "Kubeflow Pipelines"
        used = {name for n in staged.nodes for name in n.pipeline_parameters}
        primary["app_data"]["properties"]["pipeline_parameters"] = [
            {"name": p.name, "description": p.description,
             "default_value": {"type": p.type_name, "value": values[p.name]}, "required": p.required}
            for p in staged.parameters.values() if p.name in used]
        for raw, node in zip(primary["nodes"], staged.nodes, strict=True):
            if node.pipeline_parameters:
                raw["app_data"]["component_parameters"]["pipeline_parameters"] = list(node.pipeline_parameters)
    path = workspace / f"{re.sub(r'[^A-Za-z0-9_-]', '-', pipeline.name)}.pipeline"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------- export


def export(path: str | os.PathLike[str], target: str, output: str | os.PathLike[str] | None = None, *,
           parameters: Mapping[str, Any] | None = None, s3_profile: str | None = None, bucket: str,
           cos_secret: str = "nbplugins-cos", endpoint: str | None = None, namespace: str | None = None,
           overwrite: bool = False, timeout: float = 600.0) -> Path:
    """Export ``path`` to ``target`` (kfp or airflow) with Elyra; returns the written file."""
    if target not in TARGETS:
        raise ValidationError(f"unknown export target {target!r} (known: {', '.join(TARGETS)})")
    pipeline = elyra.load(path)
    values = resolve_parameters(pipeline, parameters)
    suffix = TARGETS[target][2]
    out = Path(output) if output else Path.cwd() / f"{pipeline.name}.{suffix}"
    if out.suffix != f".{suffix}":
        raise ValidationError(f"{out}: a {target} export is a .{suffix} file")
    if out.exists() and not overwrite:
        raise ValidationError(f"{out} exists; pass --overwrite to replace it")
    if not elyra.K8S_NAME.match(cos_secret):
        raise ValidationError(f"cos secret {cos_secret!r} is not a valid Kubernetes secret name")
    storage = storage_settings(s3_profile)
    from nbplugins.papermill.kernels import SECRET_ENV

    secrets.environ_secrets(SECRET_ENV)  # tokens and keys of this session, for the scrub and the leak check
    for node in pipeline.nodes:  # resolve env secrets only to learn their values for the leak check
        for value in pipeline.env_of(node).values():
            if is_reference(value):
                with contextlib.suppress(Exception):

                    resolve_reference("export check", value)
    with tempfile.TemporaryDirectory(prefix="nbplugins-export-") as tmp:
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o700)
        home = tmp_path / "jupyter"
        env = elyra_env(home)
        runtimes = home / "data" / "metadata" / "runtimes"
        runtimes.mkdir(parents=True)
        rc = runtime_config(target, storage, bucket=bucket, cos_secret=cos_secret, endpoint=endpoint,
                            namespace=namespace)
        files.write_atomic(runtimes / f"{RUNTIME_NAME}.json", json.dumps(rc, indent=2))
        workspace = tmp_path / "workspace"
        workspace.mkdir()
        staged = stage(pipeline, workspace, target, values)
        result = tmp_path / f"export.{suffix}"
        argv = [elyra_pipeline(), "export", staged.name, "--runtime-config", RUNTIME_NAME,
                "--output", str(result), "--overwrite"]
        try:
            proc = subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ExecutionError(f"elyra-pipeline export did not finish within {timeout:.0f} s") from None
        if proc.returncode != 0 or not result.exists():
            hint = ""
            if "cloud storage" in (proc.stdout or "") + (proc.stderr or ""):
                hint = (f" (Elyra uploads the node archives to bucket {bucket!r} at {storage['endpoint']} and creates it "
                        "when missing: check that it exists or can be created there, or name another with --bucket)")
            raise ExecutionError(f"elyra-pipeline export failed for {pipeline.where}: {_elyra_error(proc)}{hint}")
        text = result.read_text().replace(f"{workspace}/", "")  # the staging folder means nothing elsewhere
        leaked, count = secrets.redact_count(text)
        if count:
            raise ExecutionError(f"refusing to write {out}: Elyra's export contains {count} credential value(s)")
        files.write_atomic(out, text, mode=None)
    return out


def _elyra_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The informative lines of Elyra's output, redacted, on one line."""
    text = secrets.redact((proc.stdout or "") + "\n" + (proc.stderr or ""))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= set("─-=")]
    useful = [ln for ln in lines if any(w in ln for w in ("Error", "error", "[Error]", "FAILED", "Invalid", "invalid"))]
    return " | ".join((useful or lines)[-4:])[:800] or f"exit code {proc.returncode}"
