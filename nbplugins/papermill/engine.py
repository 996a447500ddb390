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

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, NotebookExecutionManager
from papermill.translators import translate_parameters
from papermill.utils import merge_kwargs, remove_args

from nbplugins import secrets
from nbplugins.errors import ExecutionError, NbpluginsError
from nbplugins.papermill import kernels, parameters

log = logging.getLogger(__name__)


class _QuietBlack(logging.Filter):
    """papermill warns on every run when an installed black lacks the API it expects."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Black encountered an error" not in record.getMessage()


logging.getLogger("papermill.translators").addFilter(_QuietBlack())


class ScrubbingExecutionManager(NotebookExecutionManager):
    """Papermill's execution manager, scrubbing secrets before every save."""

    scrubbed = 0

    def save(self, **kwargs: Any) -> None:
        nb = kwargs.get("nb")
        if nb is not None:
            self.nb = nb
        self.scrubbed += secrets.redact_notebook(self.nb)
        super().save()

    def notebook_complete(self, **kwargs: Any) -> None:
        super().notebook_complete(**kwargs)
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
    source = translate_parameters(kernel_name, language, plain, "Parameters") if plain else ""
    if refs:
        source += "# Secret parameters, read from the kernel environment\n"
        source += parameters.reference_lines(refs, language)
    for index, cell in enumerate(nb.cells):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            replacement = new_code_cell(source=source, metadata=cell.metadata)
            nb.cells[index] = replacement
            break
    return env


class NbpluginsEngine(NBClientEngine):
    """Papermill engine: credentials in the kernel environment, scrubbed outputs, per-run cwd."""

    @classmethod
    def execute_notebook(cls, nb: nbformat.NotebookNode, kernel_name: str, output_path: str | None = None,
                         progress_bar: bool = True, log_output: bool = False,
                         autosave_cell_every: int = 30, **kwargs: Any) -> nbformat.NotebookNode:
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
                                 **kwargs: Any) -> nbformat.NotebookNode:
        language = cls.nb_language(nb_man.nb)
        secret_env = _rewrite_injected_cell(nb_man.nb, kernel_name, language)
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        keeper = None
        if credentials is None and km is None:
            keeper = kernels.TokenKeeper()
            credentials = {**kernels.s3_environment(), **keeper.start()}
        env = kernels.kernel_environment({**(kernel_env or {}), **secret_env}, credentials or {})
        final_kwargs = merge_kwargs(
            kwargs, timeout=execution_timeout, startup_timeout=start_timeout, kernel_name=kernel_name,
            log=logging.getLogger("papermill"), log_output=log_output, stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        if kernel_cwd is not None:
            final_kwargs["resources"] = {"metadata": {"path": str(kernel_cwd)}}
        owned = scratch = None
        if km is None:
            if keeper is None:
                scratch = tempfile.mkdtemp(prefix="nbplugins-kernel-")
            owned = kernels.new_kernel_manager(kernel_name, keeper.directory if keeper else scratch)
            km = owned
        client = PapermillNotebookClient(nb_man, km=km, **final_kwargs)
        try:
            if km.has_kernel:
                return client.execute()
            return client.execute(env=env, cwd=str(kernel_cwd) if kernel_cwd else None)
        finally:
            if client.kc is not None:  # nbclient leaves the channels open on a kernel it does not own
                client.kc.stop_channels()
                client.kc = None
            if owned is not None or km.has_kernel:
                kernels.stop_kernel(km)
            if keeper is not None:
                keeper.stop()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


def _load(input_path: str) -> nbformat.NotebookNode:
    from papermill.iorw import load_notebook_node

    try:
        return load_notebook_node(input_path)
    except FileNotFoundError:
        raise ExecutionError(f"{input_path}: notebook not found") from None
    except (ValueError, nbformat.ValidationError) as exc:
        raise ExecutionError(f"{input_path}: not a valid notebook ({exc})") from None


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
) -> nbformat.NotebookNode:
    """Execute one notebook with the nbplugins engine; thread-safe, one kernel per call.

    ``cwd`` is the kernel's working directory (default: the notebook's folder for local
    notebooks). ``km`` is a started kernel from a :class:`~.kernels.KernelPool`;
    ``credentials`` an environment from :func:`~.kernels.credentials` shared by many runs.
    Raises :class:`ExecutionError` naming the failing cell after the scrubbed output is saved.
    """
    from papermill import execute_notebook
    from papermill.exceptions import PapermillExecutionError

    source = os.fspath(input_path)
    target = os.fspath(output_path) if output_path is not None else None
    params = dict(parameters or {})
    nb = _load(source)
    from nbplugins.papermill import parameters as params_mod

    params_mod.check(nb, params, source=source, allow_unknown=allow_unknown)
    if cwd is None and "://" not in source:
        cwd = str(Path(source).resolve().parent)
    try:
        return execute_notebook(
            source, target, parameters=params, engine_name="nbplugins", kernel_name=kernel_name,
            progress_bar=progress, log_output=log_output, kernel_cwd=os.fspath(cwd) if cwd else None,
            kernel_env=dict(env or {}), km=km, credentials=credentials, execution_timeout=execution_timeout,
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
