"""``nbplugins dataminer``: Run D4Science DataMiner (OGC WPS) processes and bring their results home."""

from __future__ import annotations

from typing import Any

import click

from nbplugins.commands.process_verbs import add_verbs


@click.group(name="dataminer")
@click.option("--url", default=None, metavar="URL", help="WPS endpoint (default: DATAMINER_URL or [d4science]).")
@click.pass_context
def group(ctx: click.Context, url: str | None) -> None:
    """Run D4Science DataMiner (OGC WPS) processes and bring their results home.

    The token is D4SCIENCE_TOKEN (or GCUBE_TOKEN, or [d4science] token): a JWT goes as
    Authorization: Bearer, a legacy gcube token as the gcube-token header.
    """
    ctx.obj = {**(ctx.obj or {}), "url": url}


def _client(ctx: click.Context) -> Any:
    from nbplugins.services.dataminer import DataMiner

    return DataMiner(ctx.obj.get("url"))


add_verbs(group, _client, describe_help="Show a process's inputs and outputs (PROCESS: full id, or its last part when unique).",
          run_help="Run PROCESS with the inputs, wait for it, and download every result to DEST.")
