"""``nbplugins elyra``: Switch the Elyra editor's local runtime between nbplugins and Elyra's own."""

from __future__ import annotations

import click

_dir_option = click.option(
    "--config-dir", default=None, metavar="DIR", hidden=True,
    help="The Jupyter config folder to write (default: the environment's, sys.prefix/etc/jupyter).")


@click.group(name="elyra")
def group() -> None:
    """Switch the Elyra editor's local runtime between nbplugins and Elyra's own."""


def _echo_status(state: object) -> None:
    from nbplugins.editor import factory

    click.echo(state.line())  # type: ignore[attr-defined]
    click.echo(f"config:  {state.config_file}")  # type: ignore[attr-defined]
    missing = factory.missing()
    if missing:
        click.echo(f"palette: {len(missing)} snippet/image/catalog file(s) not installed; run "
                   "python -m nbplugins.editor.factory")


@group.command("enable")
@_dir_option
def enable(config_dir: str | None) -> None:
    """Run the editor's (and elyra-pipeline's) local pipelines with nbplugins, in this environment."""
    from nbplugins.editor import factory, switch
    from nbplugins.errors import NbpluginsError

    state = switch.enable(config_dir)
    factory.install()
    _echo_status(state)
    if state.active != "nbplugins":
        raise NbpluginsError(f"wrote {state.config_file}, but another setting wins: {state.why}")
    click.echo("restart JupyterLab (the Jupyter server) for the editor to use it", err=True)


@group.command("disable")
@_dir_option
def disable(config_dir: str | None) -> None:
    """Give the local runtime back to Elyra's own processor."""
    from nbplugins.editor import switch
    from nbplugins.errors import NbpluginsError

    state = switch.disable(config_dir)
    _echo_status(state)
    if state.active == "nbplugins":
        raise NbpluginsError(f"nbplugins is still the local runtime: {state.why}")
    click.echo("restart JupyterLab (the Jupyter server) for the editor to use it", err=True)


@group.command("status")
@_dir_option
def status(config_dir: str | None) -> None:
    """Say which processor runs local pipelines (nbplugins or Elyra's) and why."""
    from nbplugins.editor import switch

    _echo_status(switch.status(config_dir))
