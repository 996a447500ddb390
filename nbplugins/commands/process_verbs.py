"""The verbs ``nbplugins dataminer`` and ``nbplugins processes`` share: ``list``, ``describe``,
``run`` (its options), and how processes, descriptions and results are printed."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``run``: inputs, destination, timeout, unpack, JSON output, no bars."""
    for option in reversed([
        click.argument("process"),
        click.option("-i", "--input", "inputs", multiple=True, metavar="NAME=VALUE",
                     help="An input; repeat for several (and for several values of one input). A complex input "
                          "is an http(s) URL, an s3:// object (sent as a presigned URL) or a local file."),
        click.option("-o", "--output", "dest", required=True, metavar="DEST",
                     help="Where the results go: a folder, s3://bucket/prefix or onedata://space/folder."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                     help="Give up waiting after this long (default: [d4science] timeout, 3600 s)."),
        click.option("--unpack", is_flag=True, help="Replace zip results by their files."),
        click.option("--profile", default=None, metavar="NAME", help="S3 profile for s3:// inputs and DEST."),
        click.option("--json", "as_json", is_flag=True, help="Print the result list as JSON."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]):
        fn = option(fn)
    return fn


def echo_results(results: Sequence[Any], as_json: bool) -> None:
    """Print what landed: JSON, or one line per result (name, size, location)."""
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
        return
    for r in results:
        click.echo(f"{r.name}\t{r.size}\t{r.location}")


def echo_processes(items: Sequence[Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"id": p.id, "title": p.title, "description": p.description} for p in items],
                              indent=2))
        return
    for p in items:
        click.echo(f"{p.id}\t{p.title}" if p.title and p.title != p.id.rsplit(".", 1)[-1] else p.id)


def echo_description(description: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(description.as_dict(), indent=2, default=str))
        return
    click.echo(f"{description.id}" + (f": {description.title}" if description.title else ""))
    if description.abstract:
        click.echo(f"  {description.abstract}")
    click.echo("inputs:")
    for i in description.inputs:
        kind = "file or URL" if i.kind == "complex" else i.data_type
        notes = ["required" if i.required else "optional"]
        if i.default is not None:
            notes.append(f"default {i.default}")
        if i.allowed:
            notes.append("one of " + ", ".join(str(a) for a in i.allowed))
        if i.formats:
            notes.append(", ".join(i.formats))
        if i.max_occurs is None or i.max_occurs > 1:
            notes.append("repeatable")
        click.echo(f"  {i.name} ({kind}; {'; '.join(notes)})" + (f": {i.title}" if i.title and i.title != i.name else ""))
    click.echo("outputs:")
    for name, title, kind in description.outputs:
        click.echo(f"  {name} ({kind})" + (f": {title}" if title and title != name else ""))


def add_verbs(group: click.Group, client: Callable[[click.Context], Any], *, describe_help: str,
              run_help: str) -> None:
    """Add ``list``, ``describe PROCESS`` and ``run PROCESS -i ... -o DEST`` to ``group``, on ``client(ctx)``."""

    @group.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def list_cmd(ctx: click.Context, as_json: bool) -> None:
        """List the processes the service offers."""
        echo_processes(client(ctx).processes(), as_json)

    @group.command("describe", help=describe_help)
    @click.argument("process")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def describe_cmd(ctx: click.Context, process: str, as_json: bool) -> None:
        echo_description(client(ctx).describe(process), as_json)

    @group.command("run", help=run_help)
    @run_options
    @click.pass_context
    def run_cmd(ctx: click.Context, process: str, inputs: tuple[str, ...], dest: str, timeout: float | None,
                unpack: bool, profile: str | None, as_json: bool, quiet: bool) -> None:
        from nbplugins import lifecycle
        from nbplugins.services.inputs import parse_assignments

        values = parse_assignments(inputs)
        remote = client(ctx)
        with lifecycle.stoppable():
            results = remote.run(process, values, dest, timeout=timeout, unpack=unpack, progress=not quiet,
                                 profile=profile)
        echo_results(results, as_json)
