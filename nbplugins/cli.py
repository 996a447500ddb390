"""The ``nbplugins`` command line: wiring only; the library modules do the work.

Expected failures (:class:`~nbplugins.errors.NbpluginsError`) print one redacted line and
exit non-zero; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import click

from nbplugins import __version__, lifecycle, secrets
from nbplugins.errors import NbpluginsError


def _import_jsonschema_without_iri_checker() -> None:
    """Import jsonschema with its optional rfc3987-syntax IRI checker out of sight, once.

    jsonschema imports that checker at its own import (nbformat imports jsonschema), and it
    compiles a Lark grammar then: a second on every command that reads a notebook. Nothing here
    validates IRI formats. The module is hidden for this one import only; it stays importable.
    """
    if "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        return
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
    try:
        import jsonschema  # noqa: F401
    finally:
        sys.modules.pop("rfc3987_syntax", None)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nbplugins")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show progress logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Repeatable, shareable notebook workflows for EGI, EOSC and D4Science hubs."""
    ctx.obj = {"debug": debug}
    _import_jsonschema_without_iri_checker()
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    secrets.install_log_redaction()


# ----------------------------------------------------------------------------- token


@cli.group()
def token() -> None:
    """Find, inspect and print the OIDC access token."""


_source_option = click.option(
    "--source", "source", default=None, metavar="NAME",
    help="Use only this token source (env, file, egi, eosc, oidc-agent, refresh).",
)


@token.command("check")
@_source_option
def token_check(source: str | None) -> None:
    """Show where the token comes from, who it is for, when it expires and its VOs."""
    from nbplugins.tokens import TokenResolver, relative, summary

    tok = TokenResolver(source=source).inspect()
    rows = summary(tok)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(secrets.redact(f"{key + ':':<{width + 1}} {value}"))
    if tok.expired():
        raise NbpluginsError(f"{tok.source}: the token expired {relative(tok.seconds_left() or 0)}")


@token.command("print")
@_source_option
def token_print(source: str | None) -> None:
    """Print a valid access token (refreshed if needed) to standard output."""
    from nbplugins.tokens import TokenResolver

    tok = TokenResolver(source=source).get()
    click.echo(tok.value)


# --- sweep

_timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
    help="Stop a run (a node) that takes longer than this; it fails, the others go on.")



@cli.command("sweep")
@click.argument("template", type=click.Path(dir_okay=False))
@click.option("--grid", type=click.Path(dir_okay=False), help="YAML: name -> list of values (all combinations).")
@click.option("--params", "table", type=click.Path(dir_okay=False), help="CSV table: one run per row.")
@click.option("-o", "--output", "pattern", required=True,
              help="Output path pattern, e.g. 'out/run-{alpha}-{n}.ipynb' or 's3://bucket/{index}.ipynb'.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Runs at once (and kernels kept warm).")
@click.option("--report-dir", default=None, help="Where the summary goes (default: sweep-<template>).")
@click.option("--force", is_flag=True, help="Run again the runs that finished earlier.")
@click.option("--allow-unknown", is_flag=True, help="Pass parameters the template does not declare.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler, with --executor dask.")
@_timeout_option
@click.option("--max-runs", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Refuse a grid that makes more runs than this.")
def sweep_cmd(template: str, grid: str | None, table: str | None, pattern: str, jobs: int,
              report_dir: str | None, force: bool, allow_unknown: bool, executor: str,
              scheduler: str | None, timeout: float | None, max_runs: int) -> None:
    """Run TEMPLATE once per parameter set, each in a fresh kernel, and summarize the runs."""
    from nbplugins import forkserver

    if executor == "local":
        forkserver.prestart()

    from tqdm import tqdm

    from nbplugins import sweep
    from nbplugins.errors import ExecutionError, ValidationError
    from nbplugins.events import Kind
    from nbplugins.papermill import kernels, parameters

    if (grid is None) == (table is None):
        raise ValidationError("give exactly one of --grid FILE or --params FILE")
    report = Path(report_dir or f"sweep-{Path(template).stem}")
    _require_folder(report, "--report-dir")
    nb = sweep._load(template)
    if executor == "local":  # once, not a failed kernel start per run (Dask workers have their own)
        kernels.require_kernel(nb.metadata.kernelspec.name, where=template)
    declared = parameters.declared(nb)
    sets = sweep.load_grid(grid, declared, max_runs) if grid else sweep.load_table(table, declared)
    runs = sweep.plan(template, sets, pattern, allow_unknown=allow_unknown)
    counts = {"ok": 0, "failed": 0, "skipped": 0}  # by the runs' status, as sweep.json records them
    events = sweep.execute_runs(template, runs, jobs=jobs, report_dir=report, force=force, executor=executor,
                                scheduler=scheduler, allow_unknown=allow_unknown, timeout=timeout)
    with lifecycle.stoppable(), contextlib.closing(events), \
            tqdm(total=len(runs), unit="run", desc="sweep", file=sys.stderr) as bar:
        for event in events:
            run = event.payload
            if run is not None and event.kind in (Kind.FINISHED, Kind.FAILED, Kind.REUSED):
                counts[run.status] += 1
                bar.update(1)
                bar.set_postfix(counts)
                if event.kind == Kind.FAILED:
                    tqdm.write(f"run {run.index} failed: {run.error}", file=sys.stderr)
    paths = sweep.write_summary(runs, report, title=f"sweep of {Path(template).name}")
    click.echo(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped; "
               f"summary: {paths['csv']}, report: {paths['html']}")
    if counts["failed"]:
        raise ExecutionError(f"{counts['failed']} of {len(runs)} runs failed (see {paths['csv']})")


def _require_folder(path: Path, option: str) -> None:
    """Refuse a folder option that names a file (or lies below one) before anything runs."""
    from nbplugins.errors import ValidationError

    for at in (path, *path.parents):
        if at.exists():
            if not at.is_dir():
                where = "is a file" if at == path else f"is below {at}, which is a file"
                raise ValidationError(f"{option} {path}: {where}; give a folder (it is created if missing)")
            return


# --- link


@cli.command("link")
@click.argument("repo")
@click.option("--hub", default=None, metavar="URL|NAME",
              help="JupyterHub URL or name (egi, eosc, or one from [hubs.urls]).")
@click.option("--branch", default=None, help="Branch or tag (default: the repo's default branch).")
@click.option("--target-path", default=None, metavar="DIR",
              help="Folder in the user's home (default: the last part of the repo URL).")
@click.option("--open", "open_path", default=None, metavar="FILE",
              help="Notebook or folder to open, relative to the repo root.")
@click.option("--ui", type=click.Choice(["lab", "classic"]), default="lab", show_default=True,
              help="Open it in JupyterLab or the classic notebook UI.")
@click.option("--qr", default=None, metavar="OUT.png", help="Also write the link as a QR-code PNG.")
@click.option("--parent-path", default=None, metavar="DIR", envvar="NBGITPULLER_PARENTPATH", show_envvar=True,
              help="The hub's NBGITPULLER_PARENTPATH, if it sets one (nbgitpuller clones below it).")
@click.option("--check", is_flag=True,
              help="Check in the repo that the branch and the --open file exist.")
def link(repo: str, hub: str | None, branch: str | None, target_path: str | None,
         open_path: str | None, ui: str, qr: str | None, parent_path: str | None, check: bool) -> None:
    """Print an nbgitpuller link that pulls REPO into the hub home and opens a notebook."""
    from nbplugins.hub import links

    made = links.build(repo, hub, branch=branch, target_path=target_path, open=open_path,
                       ui=ui, check=check, parent_path=parent_path)
    if made.resolved is not None:
        r = made.resolved
        what = f", {made.open} is a {r.open_kind}" if made.open else ""
        click.echo(f"checked: {r.branch} at {r.commit[:10]}{what}", err=True)
    if qr:
        click.echo(f"QR code: {made.write_qr(qr)}", err=True)
    click.echo(made.url)


# --- data


@cli.group()
def data() -> None:
    """Move data between the local disk, S3 and Onedata: verified, atomic, resumable."""


def _data_command(name: str, summary: str, *, mirror: bool = False):  # noqa: ANN202 - click decorator factory
    @data.command(name, help=summary)
    @click.argument("src")
    @click.argument("dest")
    @click.option("--profile", default=None, metavar="NAME", help="S3 profile ([s3.NAME]) for both ends.")
    @click.option("--src-profile", default=None, metavar="NAME", help="S3 profile for SRC only.")
    @click.option("--dest-profile", default=None, metavar="NAME", help="S3 profile for DEST only.")
    @click.option("-j", "--concurrency", type=click.IntRange(min=1), default=None,
                  help="Parts in flight (profile default).")
    @click.option("--part-size", type=click.IntRange(min=1), default=None, metavar="MIB",
                  help="Part / range size in MiB.")
    @click.option("--no-manifest", is_flag=True, help="Do not write _MANIFEST.json for a directory.")
    @click.option("--no-clobber", is_flag=True,
                  help="Keep files in DEST that differ from SRC (default: replace them, and count them).")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
    def command(src: str, dest: str, profile: str | None, src_profile: str | None, dest_profile: str | None,
                concurrency: int | None, part_size: int | None, no_manifest: bool, no_clobber: bool,
                quiet: bool, delete: bool = False) -> None:
        from nbplugins.storage import staging

        events = getattr(staging, name)(
            src, dest, profile=profile, src_profile=src_profile, dest_profile=dest_profile,
            concurrency=concurrency, part_size=part_size * 2**20 if part_size else None,
            manifest=not no_manifest, clobber=not no_clobber, **({"delete": True} if delete else {}))
        result = staging.consume(events, progress=not quiet, out=sys.stderr)
        where = "local " if name == "get" else ""
        click.echo(f"{result.files} files, {result.bytes / 2**20:.1f} MiB in {result.seconds:.1f} s "
                   f"({result.rate / 2**20:.1f} MiB/s); {result.skipped} already there"
                   + f"; {result.replaced} {where}file{'s' if result.replaced != 1 else ''} replaced (they differed)"
                   + (f"; {result.kept} different {where}file{'s' if result.kept != 1 else ''} kept (--no-clobber)"
                      if no_clobber else "")
                   + (f"; {result.deleted} deleted" if delete else "")
                   + (f"; manifest {result.manifest}" if result.manifest else ""))

    if mirror:
        click.option("--delete", is_flag=True,
                     help="Then delete files in DEST that SRC does not have (DEST mirrors SRC).")(command)
    return command


_data_command("get", "Download SRC (s3://, onedata://) to the local path DEST.")
_data_command("put", "Upload the local file or directory SRC to DEST (s3://, onedata://).")
_data_command("sync", "Copy what differs from SRC to DEST (any two storage URLs or paths).", mirror=True)


# --- pipeline


@cli.group()
def pipeline() -> None:
    """Elyra pipelines: build from YAML, validate, run locally in parallel, export to KFP/Airflow."""


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--param")
        out[name.strip()] = value
    return out


_param_option = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                             help="Pipeline parameter value (repeatable).")


@pipeline.command("build")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default=None, metavar="FILE.pipeline", help="Default: the spec name, .pipeline.")
def pipeline_build(spec: str, output: str | None) -> None:
    """Build an Elyra .pipeline file from a YAML SPEC (templates, parameters, edges, defaults)."""
    from nbplugins.pipelines import spec as spec_mod

    click.echo(f"wrote {spec_mod.build(spec, output)}")


@pipeline.command("validate")
@click.argument("path", type=click.Path(dir_okay=False))
def pipeline_validate(path: str) -> None:
    """Check a .pipeline file: schema, versions, cycles, files, parameters, images."""
    from nbplugins.pipelines import elyra

    p = elyra.load(path)
    edges = sum(len(n.depends_on) for n in p.nodes)
    click.echo(f"{path}: valid ({len(p.nodes)} nodes, {edges} edges, {len(p.parameters)} parameters)")


@pipeline.command("run")
@click.argument("path", type=click.Path(dir_okay=False))
@_param_option
@click.option("--run-dir", default=None, metavar="DIR", help="Where executed copies and the record go.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Nodes at once.")
@click.option("--resume", is_flag=True, help="Re-run only the failed and skipped nodes of --run-dir.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_timeout_option
def pipeline_run(path: str, params: tuple[str, ...], run_dir: str | None, jobs: int, resume: bool,
                 quiet: bool, timeout: float | None) -> None:
    """Run a pipeline locally: independent nodes in parallel, notebooks never modified in place."""
    from nbplugins import forkserver

    forkserver.prestart()
    from nbplugins.pipelines import elyra, runner

    job = runner.PipelineRun(elyra.load(path), run_dir, parameters=_params(params), jobs=jobs, resume=resume,
                             timeout=timeout)
    events = runner.with_progress(job, echo=lambda line: click.echo(line, err=True), disable=quiet or None)
    try:
        with lifecycle.stoppable(), contextlib.closing(events):
            for _event in events:
                pass
    except lifecycle.Interrupted:
        click.echo(f"resume with: nbplugins pipeline run {path} --resume --run-dir {job.run_dir}", err=True)
        raise
    click.echo(f"{job.summary()}\nrecord: {job.record_path}\nreport: {job.run_dir / 'report.html'}", err=True)
    job.raise_for_status()


@pipeline.command("export")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--to", "target", type=click.Choice(["kfp", "airflow"]), required=True)
@click.option("-o", "--output", default=None, metavar="FILE", help="Default: the pipeline name, .yaml or .py.")
@_param_option
@click.option("--s3-profile", default=None, metavar="NAME", help="S3 profile ([s3.NAME]) for the node archives.")
@click.option("--bucket", required=True, help="Bucket that receives the node archives and outputs.")
@click.option("--cos-secret", default="nbplugins-cos", show_default=True,
              help="Kubernetes secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the cluster.")
@click.option("--endpoint", default=None, metavar="URL", help="KFP API or Airflow URL recorded in the runtime config.")
@click.option("--namespace", default=None, help="Kubernetes namespace the nodes run in.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def pipeline_export(path: str, target: str, output: str | None, params: tuple[str, ...], s3_profile: str | None,
                    bucket: str, cos_secret: str, endpoint: str | None, namespace: str | None,
                    overwrite: bool) -> None:
    """Export to Kubeflow Pipelines (YAML) or Airflow (DAG .py) through Elyra; secrets stay Kubernetes secrets."""
    from nbplugins.pipelines import export

    out = export.export(path, target, output, parameters=_params(params), s3_profile=s3_profile, bucket=bucket,
                        cos_secret=cos_secret, endpoint=endpoint, namespace=namespace, overwrite=overwrite)
    click.echo(f"wrote {out}")


# ----------------------------------------------------------------------------- feature groups

from nbplugins.commands import (  # noqa: E402 - wired after the core groups, each lazy inside
    config,
    dataminer,
    elyra,
    hub,
    openstack,
    oscar,
    processes,
    sandbox,
    serve,
)

for _module in (config, dataminer, processes, oscar, serve, elyra, openstack, hub, sandbox):
    cli.add_command(_module.group)


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map expected errors to one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    start = time.monotonic()
    try:
        cli.main(args=args, prog_name="nbplugins", standalone_mode=False)
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt (and so Interrupted) into Abort
        signal = exc.__cause__ if isinstance(exc.__cause__, lifecycle.Interrupted) else lifecycle.Interrupted(2)
        click.echo(f"nbplugins: interrupted ({signal}); what finished is recorded", err=True)
        sys.exit(signal.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        signal = exc if isinstance(exc, lifecycle.Interrupted) else lifecycle.Interrupted(2)
        click.echo(f"nbplugins: interrupted ({signal}); what finished is recorded", err=True)
        sys.exit(signal.exit_code)
    except NbpluginsError as exc:
        if debug:
            raise
        click.echo(f"nbplugins: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        message = secrets.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        click.echo(f"nbplugins: unexpected {type(exc).__name__}: {message} (run with --debug for a traceback)", err=True)
        sys.exit(1)
    finally:
        logging.getLogger(__name__).debug("done in %.2f s", time.monotonic() - start)
