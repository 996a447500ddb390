"""``nbplugins processes``: Run OGC API - Processes jobs (D4Science CCP, pygeoapi, ADES) and bring their results home."""

from __future__ import annotations

import json
from typing import Any

import click

from nbplugins.commands.process_verbs import add_verbs


@click.group(name="processes")
@click.option("--service", "service_name", default=None, metavar="NAME|URL",
              help="A [processes.NAME] section or the service's URL (default: the only configured one).")
@click.option("--auth", type=click.Choice(["none", "bearer", "uma"]), default=None,
              help="How to authenticate (default: the section's auth; none for a URL). bearer sends the "
                   "D4Science or OIDC token; uma exchanges it for a VRE token (D4Science CCP).")
@click.pass_context
def group(ctx: click.Context, service_name: str | None, auth: str | None) -> None:
    """Run OGC API - Processes jobs (D4Science CCP, pygeoapi, ADES) and bring their results home."""
    ctx.obj = {**(ctx.obj or {}), "service": service_name, "auth": auth}


def _client(ctx: click.Context) -> Any:
    from nbplugins.services.processes import service

    return service(ctx.obj.get("service"), auth=ctx.obj.get("auth"))


def _echo_job(job: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"id": job.id, "process": job.process, "status": job.state.value,
                               "progress": job.progress, "message": job.message,
                               "started": job.started.isoformat() if job.started else None,
                               "finished": job.finished.isoformat() if job.finished else None}, indent=2))
        return
    progress = f" {job.progress}%" if job.progress is not None else ""
    message = f": {job.message}" if job.message else ""
    click.echo(f"{job.id}\t{job.state.value}{progress}{message}")


add_verbs(group, _client, describe_help="Show a process's inputs and outputs.",
          run_help="Run PROCESS with the inputs, wait for it (Ctrl-C dismisses it), and download every result to DEST.")


@group.command("status")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status_cmd(ctx: click.Context, job: str, as_json: bool) -> None:
    """Show a job's status, progress and message."""
    _echo_job(_client(ctx).status(job), as_json)


@group.command("dismiss")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dismiss_cmd(ctx: click.Context, job: str, as_json: bool) -> None:
    """Cancel a running job, or remove a finished one and its results."""
    _echo_job(_client(ctx).dismiss(job), as_json)
