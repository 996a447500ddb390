"""Switch the local runtime of the Elyra editor and ``elyra-pipeline`` between nbplugins and Elyra.

Elyra's ``PipelineProcessorRegistry`` loads every ``elyra.pipeline.processors`` entry point whose
*entry-point name* is in its ``runtimes`` filter (Jupyter config, or env ``ELYRA_PROCESSOR_RUNTIMES``;
no filter loads all) and keys each processor by the instance's ``name``. nbplugins registers a
processor of type LOCAL under the entry-point name ``nbplugins``; it calls itself ``local`` only
when the filter leaves Elyra's ``local`` entry point out, which is what :func:`enable` writes:
``PipelineProcessorRegistry.runtimes`` in ``jupyter_elyra_config.json`` of the environment's
Jupyter config folder (``sys.prefix/etc/jupyter``). The ``jupyter_server_config.d`` folder cannot
carry it: Jupyter reads only ``jpserver_extensions`` from there. Without that file (installing
nbplugins alone) nothing changes: Elyra's ``local`` processor stays the local runtime.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbplugins import files
from nbplugins.errors import ConfigError, NbpluginsError

CONFIG_FILE = "jupyter_elyra_config.json"
SECTION, KEY = "PipelineProcessorRegistry", "runtimes"
OURS = "NbpluginsProcessor"  # our processor's config section: remembers the filter before enable
GROUP = "elyra.pipeline.processors"
ENTRY_POINT = "nbplugins"
ELYRA_LOCAL = "local"
ENV = "ELYRA_PROCESSOR_RUNTIMES"
INSTALL_HINT = "pip install 'nbplugins[elyra]'"


@dataclass
class Status:
    """Which processor runs local pipelines, and why."""

    active: str  # "nbplugins" or "elyra"
    why: str
    runtimes: list[str] | None  # the effective runtimes filter, None for none
    source: str | None  # where that filter comes from (a file or the environment variable)
    config_file: Path  # the file enable/disable write

    def line(self) -> str:
        """What ``nbplugins elyra status`` prints."""
        who = "nbplugins (parallel, notebooks untouched, run.json + report.html)" if self.active == "nbplugins" \
            else "Elyra's own (sequential, notebooks executed in place)"
        return f"local runtime: {who}\nwhy: {self.why}"


def config_dir() -> Path:
    """The environment's Jupyter config folder (``sys.prefix/etc/jupyter``)."""
    from jupyter_core.paths import ENV_CONFIG_PATH

    return Path(ENV_CONFIG_PATH[0])


def installed_processors() -> list[str]:
    """Entry-point names in ``elyra.pipeline.processors`` (Elyra's and ours), sorted."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=GROUP)})


def decide(runtimes: list[str] | None) -> bool:
    """Whether a registry with this filter makes nbplugins the local runtime."""
    return runtimes is not None and ENTRY_POINT in runtimes and ELYRA_LOCAL not in runtimes


def _env_runtimes() -> list[str] | None:
    value = os.environ.get(ENV, "")
    return value.replace(" ", "").split(",") if value else None


def _file_runtimes() -> tuple[list[str] | None, str | None]:
    """The runtimes filter the Jupyter config files set for a server of this environment, and where.

    Files are read as the server reads them: every folder of ``jupyter_config_path()``, lowest
    priority first, ``jupyter_server_config`` then ``jupyter_elyra_config`` (JSON and Python).
    """
    from jupyter_core.application import JupyterApp
    from jupyter_core.paths import jupyter_config_path

    found: tuple[list[str] | None, str | None] = (None, None)
    for base in ("jupyter_server_config", "jupyter_elyra_config"):
        for config, filename in JupyterApp._load_config_files(base, path=jupyter_config_path()):
            section = config.get(SECTION, {})
            if KEY in section:
                value = section[KEY]
                found = (list(value) if value is not None else None, filename)
    return found


def effective(config: Any = None) -> tuple[list[str] | None, str | None]:
    """The filter a registry applies: ``config`` (a traitlets Config of a running app), else the
    Jupyter config files, else the environment variable (which counts only when no file sets one)."""
    if config is not None and KEY in config.get(SECTION, {}):
        value = config[SECTION][KEY]
        return (list(value) if value is not None else None), "the server's configuration"
    runtimes, source = _file_runtimes()
    if source is not None:
        return runtimes, source
    env = _env_runtimes()
    return (env, f"${ENV}") if env is not None else (None, None)


def status(directory: str | os.PathLike[str] | None = None) -> Status:
    """Which processor a Jupyter server (and ``elyra-pipeline run``) of this environment uses, and why."""
    target = Path(directory or config_dir()) / CONFIG_FILE
    if not _elyra_installed():
        return Status("elyra", f"Elyra is not installed in {sys.prefix}; install it with {INSTALL_HINT}",
                      None, None, target)
    runtimes, source = effective()
    if runtimes is None:
        why = (f"no runtimes filter: every installed processor loads and Elyra's '{ELYRA_LOCAL}' is the local "
               "runtime (run `nbplugins elyra enable` to switch)")
        return Status("elyra", why, None, None, target)
    shown = ", ".join(runtimes)
    if decide(runtimes):
        if ENTRY_POINT not in installed_processors():
            return Status("elyra", f"{source} asks for '{ENTRY_POINT}' ({shown}) but its entry point is not "
                          "installed; reinstall nbplugins", runtimes, source, target)
        return Status("nbplugins", f"{source} sets {SECTION}.{KEY} = [{shown}]: Elyra's '{ELYRA_LOCAL}' entry "
                      f"point is left out and '{ENTRY_POINT}' takes its place", runtimes, source, target)
    if ENTRY_POINT in runtimes:
        why = f"{source} sets {SECTION}.{KEY} = [{shown}], which keeps Elyra's '{ELYRA_LOCAL}' as well; it wins"
    else:
        why = f"{source} sets {SECTION}.{KEY} = [{shown}], without '{ENTRY_POINT}'"
    return Status("elyra", why, runtimes, source, target)


def _elyra_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("elyra") is not None


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(files.read_text(path, "a Jupyter config file is JSON text", ConfigError))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}); fix or remove it, nothing was changed"
                          ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a JSON object; fix or remove it, nothing was changed")
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, json.dumps(data, indent=2) + "\n", mode=0o644)


def enable(directory: str | os.PathLike[str] | None = None) -> Status:
    """Make nbplugins the local runtime of this environment's editor and ``elyra-pipeline``."""
    if not _elyra_installed():
        raise NbpluginsError(f"Elyra is not installed in this environment ({sys.prefix}); install the extra "
                             f"with: {INSTALL_HINT}")
    installed = installed_processors()
    if ENTRY_POINT not in installed:
        raise NbpluginsError(f"the '{ENTRY_POINT}' entry point of group {GROUP} is not installed; reinstall "
                             f"nbplugins ({INSTALL_HINT})")
    path = Path(directory or config_dir()) / CONFIG_FILE
    data = _read(path)
    section = data.setdefault(SECTION, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: {SECTION} is not an object; fix it, nothing was changed")
    ours = data.setdefault(OURS, {})
    if "previous_runtimes" not in ours:  # remember what disable restores (only the first time)
        ours["previous_runtimes"] = section.get(KEY)
    base = section.get(KEY) or installed
    section[KEY] = sorted({r for r in base if r != ELYRA_LOCAL} | {ENTRY_POINT})
    _write(path, data)
    return status(directory)


def disable(directory: str | os.PathLike[str] | None = None) -> Status:
    """Give the local runtime back to Elyra: restore the filter that was there before :func:`enable`."""
    path = Path(directory or config_dir()) / CONFIG_FILE
    data = _read(path)
    ours = data.pop(OURS, None)
    section = data.get(SECTION, {})
    if ours is None and ENTRY_POINT not in (section.get(KEY) or []):
        return status(directory)  # not enabled here: nothing to undo
    previous = (ours or {}).get("previous_runtimes")
    if previous is None:
        section.pop(KEY, None)
    else:
        section[KEY] = previous
    if not section:
        data.pop(SECTION, None)
    if data:
        _write(path, data)
    else:
        path.unlink(missing_ok=True)
    return status(directory)
