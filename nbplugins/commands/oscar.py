"""``nbplugins oscar``: Deploy and run OSCAR services; bring every output home."""

from __future__ import annotations

import json
from typing import Any

import click

_cluster_option = click.option(
    "--cluster", "cluster", default=None, metavar="NAME|URL",
    help="A cluster from [oscar.clusters.NAME] or its URL (default: [oscar] default, OSCAR_ENDPOINT).")


def _client(cluster: str | None) -> Any:
    from nbplugins.services import oscar

    return oscar.Oscar(oscar.resolve_cluster(cluster))


@click.group(name="oscar")
def group() -> None:
    """Deploy and run OSCAR services; bring every output home."""


@group.command("deploy")
@click.argument("source", type=click.Path())
@_cluster_option
@click.option("--cluster-id", default=None, metavar="ID",
              help="The FDL's cluster id to deploy (default: the cluster's name, or the only one in the FDL).")
def deploy(source: str, cluster: str | None, cluster_id: str | None) -> None:
    """Create or update every service of an FDL file or OSCAR Hub RO-Crate folder."""
    from nbplugins.services import fdl

    checked = fdl.load(source)  # every problem is found before anything is sent
    client = _client(cluster)
    for done in client.deploy(checked, cluster_id):
        for note in done.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(f"{done.action}: {done.name}")


@group.command("ls")
@_cluster_option
def ls(cluster: str | None) -> None:
    """List the services you can see on the cluster."""
    client = _client(cluster)
    rows = [("name", "image", "cpu", "memory", "visibility", "vo")]
    for svc in sorted(client.services(), key=lambda s: str(s.get("name"))):
        rows.append(tuple(str(svc.get(k) or "-") for k in ("name", "image", "cpu", "memory", "visibility", "vo")))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@group.command("show")
@click.argument("name")
@_cluster_option
def show(name: str, cluster: str | None) -> None:
    """Show a service's definition (its token and credentials hidden)."""
    from nbplugins import secrets
    from nbplugins.services import oscar

    definition = oscar.hide(_client(cluster).service(name))
    click.echo(secrets.redact(json.dumps(definition, indent=2, sort_keys=True)))


@group.command("rm")
@click.argument("name")
@_cluster_option
def rm(name: str, cluster: str | None) -> None:
    """Remove a service."""
    _client(cluster).remove(name)
    click.echo(f"removed: {name}")


@group.command("run")
@click.argument("name")
@click.argument("inputs", nargs=-1, required=True)
@_cluster_option
@click.option("--async", "is_async", is_flag=True,
              help="Upload the inputs to the service's input bucket and wait for the jobs (batch).")
@click.option("-o", "--output", "dest", default=None, metavar="DEST",
              help="Folder, s3:// or onedata:// URL for the results (default: NAME-results).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Give up after this long (default: 300 s synchronous, 3600 s asynchronous).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run(name: str, inputs: tuple[str, ...], cluster: str | None, is_async: bool, dest: str | None,
        timeout: float | None, no_progress: bool) -> None:
    """Run service NAME on each INPUT (a file, text or JSON) and bring the outputs home."""
    from nbplugins import lifecycle
    from nbplugins.errors import ExecutionError
    from nbplugins.services import oscar, oscar_batch

    dest = dest or f"{name}-results"
    oscar.check_inputs(list(inputs), files_only=False)
    client = _client(cluster)
    with lifecycle.stoppable():
        if not is_async:
            if len(inputs) > 1:
                raise click.UsageError("a synchronous run takes one INPUT; use --async for a batch")
            results = oscar.run_sync(client, name, inputs[0], dest, timeout=timeout or 300.0,
                                     progress=not no_progress)
            for result in results:
                click.echo(f"{result.location}  ({result.size} bytes)")
            return
        items = oscar_batch.run_batch(client, name, list(inputs), dest, timeout=timeout or 3600.0,
                                      progress=not no_progress)
    click.echo(oscar_batch.table(items))
    failed = [i for i in items if i.status == "failed"]
    for item in failed:
        click.echo(f"\n--- {item.source}: {item.error}", err=True)
        if item.logs:
            click.echo(f"logs of job {item.job}:\n{item.logs.rstrip()}", err=True)
    if failed:
        raise ExecutionError(f"{len(failed)} of {len(items)} inputs failed; rerun the same command to retry them "
                             "(finished inputs are skipped)")


@group.command("logs")
@click.argument("name")
@click.argument("job", required=False)
@_cluster_option
def logs(name: str, job: str | None, cluster: str | None) -> None:
    """List the jobs of service NAME, or print the logs of one JOB."""
    client = _client(cluster)
    if job:
        click.echo(client.job_logs(name, job).rstrip())
        return
    rows = [("job", "status", "created", "started", "finished")]
    jobs = client.jobs(name)
    for job_name, info in sorted(jobs.items(), key=lambda kv: (str(kv[1].get("creation_time") or ""), kv[0])):
        rows.append((job_name, *(str(info.get(k) or "-") for k in ("status", "creation_time", "start_time",
                                                                    "finish_time"))))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
