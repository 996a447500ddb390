"""Parameter sweeps: one template, many parameter sets, each in a fresh kernel.

Kernels come from a warm :class:`~nbplugins.papermill.kernels.KernelPool`, so start-up
overlaps execution; a failed run does not stop the others; finished runs are skipped on a
re-run unless forced. The same sweep runs on a Dask cluster with ``executor="dask"``.
:func:`plan` maps each parameter set to a :class:`PlannedRun`; :func:`execute_runs` executes
them, yielding :class:`nbplugins.events.Event` objects that the CLI's progress bar, the summary
and the tests consume alike; :func:`write_summary` writes CSV, Parquet and an HTML report: glued
numbers plotted against the swept parameters, and each run's notebook rendered as HTML.

Notebooks record values for the summary with scrapbook: ``scrapbook.glue("rmse", 0.12)``.
"""

from __future__ import annotations

from nbplugins.papermill.engine import _load
from nbplugins.sweep.execute import JOURNAL, STATE_FILE, execute_runs, load_state, save_state
from nbplugins.sweep.inputs import MAX_RUNS, load_grid, load_table
from nbplugins.sweep.plan import PlannedRun, plan
from nbplugins.sweep.report import summary_frame, write_summary

__all__ = ["JOURNAL", "MAX_RUNS", "STATE_FILE", "PlannedRun", "_load", "execute_runs", "load_grid", "load_state",
           "load_table", "plan", "save_state", "summary_frame", "write_summary"]
