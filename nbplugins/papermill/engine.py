"""The ``nbplugins`` papermill engine, and :func:`execute` for the rest of the suite.

Use it as ``papermill --engine nbplugins in.ipynb out.ipynb -p token @oidc``. It differs from
papermill's default engine in four ways:

* credentials reach the kernel through its environment (:mod:`.kernels`), never through
  parameters; secret references (:mod:`.parameters`) are resolved into that environment and
  the injected cell reads them from there;
* every save of the output notebook, on success and on failure, is scrubbed of every
  registered secret first; the log says how many values were scrubbed, never which;
* the kernel's working directory is set per run (``kernel_cwd``), never with ``os.chdir``,
  so concurrent runs in one process are safe (papermill issue #473);
* kernels use the IPC transport, and a caller may hand in a pre-started kernel (``km``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, NotebookExecutionManager
from papermill.utils import merge_kwargs, remove_args

from nbplugins import secrets
from nbplugins.errors import ExecutionError, NbpluginsError
from nbplugins.papermill import injected, kernels, parameters

log = logging.getLogger(__name__)


class _QuietBlack(logging.Filter):
    """papermill warns on every run when an installed black lacks the API it expects."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Black encountered an error" not in record.getMessage()


logging.getLogger("papermill.translators").addFilter(_QuietBlack())


class ScrubbingExecutionManager(NotebookExecutionManager):
    """Papermill's execution manager; every save writes a copy of the notebook scrubbed of secrets.

    The notebook itself is left alone while it runs: nbclient holds the running cell and adds
    its outputs there, so scrubbing by replacing cells would drop them from later saves. Once
    the run is over the notebook is scrubbed too, for papermill's last write and the caller.
    """

    scrubbed = 0  # secret values in the last save

    def save(self, **kwargs: Any) -> None:
        """Have papermill's ``save`` (which writes ``self.nb``) write a scrubbed copy instead."""
        if kwargs.get("nb") is not None:
            self.nb = kwargs["nb"]
        if not self.output_path:  # nothing is written
            return super().save()
        running = self.nb
        self.nb = copy.deepcopy(running)
        try:
            self.scrubbed = secrets.redact_notebook(self.nb)
            super().save()
        finally:
            self.nb = running

    def notebook_complete(self, **kwargs: Any) -> None:
        """Final save, then scrub the notebook itself: no cell runs any more."""
        super().notebook_complete(**kwargs)
        secrets.redact_notebook(self.nb)
        log.info("scrubbed %d secret value(s) from the output notebook", self.scrubbed)


def _rewrite_injected_cell(nb: nbformat.NotebookNode, kernel_name: str, language: str) -> dict[str, str]:
    """Replace secret references in the injected cell with environment reads.

    Returns the kernel environment entries that carry the secret values.
    """
    given = nb.metadata.get("papermill", {}).get("parameters") or {}
    plain, refs = parameters.split(given)
    escaped = any(plain[k] != given[k] for k in plain)
    if not refs and not escaped:
        return {}
    env = {parameters.env_name(name): parameters.resolve_reference(f"parameter {name!r}", ref)
           for name, ref in refs.items()}
    code = injected.source(kernel_name, language, plain, secret_env={name: parameters.env_name(name) for name in refs})
    injected.inject(nb, code)
    return env


def _refuse_unknown_parameters(nb: nbformat.NotebookNode, kwargs: dict[str, Any]) -> None:
    """Refuse, before a kernel starts, parameters the notebook does not declare.

    papermill only warns (papermill issue #818); ``papermill --engine nbplugins`` fails the
    way sweeps and pipelines do, naming the declared parameters. ``allow_unknown=True`` (an
    engine keyword, popped here) skips it; :func:`execute` passes it after its own check.
    Papermill's own ``PAPERMILL_*`` path parameters (``--inject-paths``) are always allowed.
    """
    if kwargs.pop("allow_unknown", False):
        return
    given = nb.metadata.get("papermill", {}).get("parameters") or {}
    source = kwargs.get("input_path") or nb.metadata.get("papermill", {}).get("input_path") or "the notebook"
    parameters.check(nb, {k: v for k, v in given.items() if not k.startswith("PAPERMILL_")}, source=str(source),
                     hint="remove them, or declare them in the parameters cell")


class NbpluginsEngine(NBClientEngine):
    """Papermill engine: credentials in the kernel environment, scrubbed outputs, per-run cwd."""

    @classmethod
    def execute_notebook(cls, nb: nbformat.NotebookNode, kernel_name: str, output_path: str | None = None,
                         progress_bar: bool = True, log_output: bool = False,
                         autosave_cell_every: int = 30, **kwargs: Any) -> nbformat.NotebookNode:
        _refuse_unknown_parameters(nb, kwargs)
        secrets.install_log_redaction()
        nb_man = ScrubbingExecutionManager(nb, output_path=output_path, progress_bar=progress_bar,
                                           log_output=log_output, autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb

    @classmethod
    def execute_managed_notebook(cls, nb_man: NotebookExecutionManager, kernel_name: str,
                                 log_output: bool = False, stdout_file: Any = None, stderr_file: Any = None,
                                 start_timeout: int = 60, execution_timeout: float | None = None,
                                 kernel_cwd: str | None = None, kernel_env: Mapping[str, str] | None = None,
                                 km: Any = None, credentials: Mapping[str, str] | None = None,
                                 run_timeout: float | None = None, **kwargs: Any) -> nbformat.NotebookNode:
        language = cls.nb_language(nb_man.nb)
        secret_env = _rewrite_injected_cell(nb_man.nb, kernel_name, language)
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        final_kwargs = merge_kwargs(
            kwargs, timeout=execution_timeout, startup_timeout=start_timeout, kernel_name=kernel_name,
            log=logging.getLogger("papermill"), log_output=log_output,
            stdout_file=_Scrubbed.wrap(stdout_file), stderr_file=_Scrubbed.wrap(stderr_file),
        )
        if kernel_cwd is not None:
            final_kwargs["resources"] = {"metadata": {"path": str(kernel_cwd)}}
        with contextlib.ExitStack() as stack:
            if km is None:  # one kernel for this notebook, started here and stopped below
                if credentials is None:
                    credentials = stack.enter_context(kernels.credentials())
                env = kernels.kernel_environment({**(kernel_env or {}), **secret_env}, credentials)
                scratch = kernels.socket_directory()
                stack.callback(shutil.rmtree, scratch, True)
                km = kernels.start_kernel(kernel_name, scratch, cwd=str(kernel_cwd) if kernel_cwd else None, env=env)
            stack.callback(kernels.stop_kernel, km)  # the engine runs one notebook per kernel
            watchdog = kernels.Watchdog(km, run_timeout)
            stack.callback(watchdog.cancel)
            client = PapermillNotebookClient(nb_man, km=km, **final_kwargs)
            try:
                return client.execute()
            except Exception:
                if watchdog.fired:
                    where = nb_man.nb.metadata.get("papermill", {}).get("input_path") or "the notebook"
                    raise ExecutionError(f"{where}: stopped after the run's {run_timeout:g} s timeout") from None
                raise
            finally:
                if client.kc is not None:  # nbclient leaves the channels open on a kernel it does not own
                    client.kc.stop_channels()
                    client.kc = None


class _Scrubbed:
    """A text stream that scrubs secrets from what the kernel writes (``--stdout-file``)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    @classmethod
    def wrap(cls, stream: Any) -> Any:
        return None if stream is None else cls(stream)

    def write(self, text: str) -> int:
        return self._stream.write(secrets.redact(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def _not_a_notebook(doc: Any) -> str | None:
    """What makes parsed JSON something other than a notebook document, or None."""
    if not isinstance(doc, dict):
        return f"its JSON is {_JSON_KINDS.get(type(doc), type(doc).__name__)}, not an object with cells and metadata"
    cells, metadata = doc.get("cells", []), doc.get("metadata", {})
    if not isinstance(metadata, dict):
        return "its metadata is not an object"
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        return "its cells are not a list of objects"
    return None


def _load(input_path: str, kernel_name: str | None = None) -> nbformat.NotebookNode:
    """The notebook at ``input_path`` as papermill loads it (``metadata.papermill``, cell tags).

    Refuses, with one line naming the file, what is not a notebook and a notebook that names
    no kernel (no ``metadata.kernelspec``) when ``kernel_name`` gives none: papermill could
    not run it.
    """
    import json

    from papermill.iorw import papermill_io
    from papermill.version import version

    try:
        text = papermill_io.read(input_path)
    except FileNotFoundError:
        raise ExecutionError(f"{input_path}: notebook not found") from None
    except UnicodeDecodeError:
        raise ExecutionError(f"{input_path}: not a valid notebook (not UTF-8 text)") from None
    try:
        problem = _not_a_notebook(json.loads(text))
    except ValueError as exc:
        raise ExecutionError(f"{input_path}: not a valid notebook (not JSON: {exc})") from None
    if problem:
        raise ExecutionError(f"{input_path}: not a valid notebook ({problem})")
    try:
        nb = nbformat.reads(text, as_version=4)
        nb = nbformat.v4.upgrade(nb) or nb
    except (ValueError, TypeError, KeyError, AttributeError, nbformat.ValidationError) as exc:
        raise ExecutionError(f"{input_path}: not a valid notebook ({exc})") from None
    if not (kernel_name or nb.metadata.get("kernelspec", {}).get("name")):
        raise ExecutionError(f"{input_path}: the notebook names no kernel (no kernelspec in its metadata): "
                             "open it in Jupyter, choose a kernel and save it")
    nb.metadata.setdefault("papermill", {"default_parameters": {}, "parameters": {}, "environment_variables": {},
                                         "version": version})
    for cell in nb.cells:  # as papermill.iorw.load_notebook_node does
        cell.metadata.setdefault("tags", [])
        cell.metadata.setdefault("papermill", {})
    return nb


def execute(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str] | None,
    parameters: Mapping[str, Any] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    kernel_name: str | None = None,
    allow_unknown: bool = False,
    log_output: bool = False,
    progress: bool = False,
    km: Any = None,
    credentials: Mapping[str, str] | None = None,
    execution_timeout: float | None = None,
    timeout: float | None = None,
) -> nbformat.NotebookNode:
    """Execute one notebook with the nbplugins engine; thread-safe, one kernel per call.

    ``cwd`` is the kernel's working directory (default: the notebook's folder for local
    notebooks). ``km`` is a started kernel from a :class:`~.kernels.KernelPool`;
    ``credentials`` an environment from :func:`~.kernels.credentials` shared by many runs.
    ``timeout`` bounds the whole run (seconds); ``execution_timeout`` each cell, as in papermill.
    Raises :class:`ExecutionError` naming the failing cell after the scrubbed output is saved.
    """
    from papermill import execute_notebook
    from papermill.exceptions import PapermillExecutionError

    source = os.fspath(input_path)
    target = os.fspath(output_path) if output_path is not None else None
    params = dict(parameters or {})
    nb = _load(source, kernel_name)
    from nbplugins.papermill import parameters as params_mod

    params_mod.check(nb, params, source=source, allow_unknown=allow_unknown)
    if cwd is None and "://" not in source:
        cwd = str(Path(source).resolve().parent)
    try:
        return execute_notebook(
            source, target, parameters=params, engine_name="nbplugins", kernel_name=kernel_name,
            progress_bar=progress, log_output=log_output, kernel_cwd=os.fspath(cwd) if cwd else None,
            kernel_env=dict(env or {}), km=km, credentials=credentials, execution_timeout=execution_timeout,
            run_timeout=timeout, allow_unknown=True,  # checked above
        )
    except PapermillExecutionError as exc:
        raise ExecutionError(
            f"{source}: cell {exc.cell_index} (execution count {exc.exec_count}) raised {exc.ename}: "
            f"{secrets.redact(str(exc.evalue))[:300]}"
        ) from None
    except NbpluginsError:
        raise
    except Exception as exc:
        name = type(exc).__name__
        if name == "DeadKernelError":
            raise ExecutionError(f"{source}: the kernel died during the run ({exc})") from None
        if name in ("NoSuchKernel",):
            raise ExecutionError(f"{source}: no kernel named {kernel_name or 'in its metadata'} is installed") from None
        raise
