"""``nbplugins sandbox``: Every service on 127.0.0.1 in one command, for trying templates and pipelines."""

from __future__ import annotations

from typing import Any

import click

_dir_option = click.option(
    "--dir", "directory", type=click.Path(file_okay=False), default=None, metavar="DIR",
    help="The sandbox's folder: state, config, data, logs (default: $XDG_STATE_HOME/nbplugins/sandbox).")


def _directory(directory: str | None) -> Any:
    from pathlib import Path

    from nbplugins.sandbox import default_dir

    return Path(directory).expanduser().absolute() if directory else default_dir()


def _dir_flag(directory: Any) -> str:
    from nbplugins.sandbox import default_dir

    return "" if directory == default_dir() else f" --dir {directory}"


def _services(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise click.BadParameter("name at least one service, e.g. s3,oidc", param_hint="--services")
    return names


def _echo(line: str) -> None:
    click.echo(line, err=True)


@click.group(name="sandbox")
def group() -> None:
    """Every service on 127.0.0.1 in one command, for trying templates and pipelines."""


@group.command("up")
@_dir_option
@click.option("--services", default=None, metavar="NAMES",
              help="Comma-separated services to start (default: all; see `nbplugins sandbox services`).")
@click.option("--detach", is_flag=True, help="Return once everything runs; stop later with `nbplugins sandbox down`.")
def up(directory: str | None, services: str | None, detach: bool) -> None:
    """Start the services, load the sample data and write the private `sandbox` profile."""
    from nbplugins import lifecycle
    from nbplugins.sandbox import stack

    where = _directory(directory)
    with lifecycle.stoppable():
        sandbox = stack.up(where, _services(services), detach=detach, echo=_echo)
        click.echo(f"sandbox running in {where}")
        for name, started in sandbox.started.items():
            facts = ", ".join(f"{k} {v}" for k, v in started.info.items())
            click.echo(f"  {name:<9} {started.server.url:<26} pid {started.server.pid:<8} {facts}")
            for url in started.data:
                click.echo(f"  {'':<9} {url}")
        click.echo(f"profile 'sandbox' in {sandbox.config_file} (private, 0600); use it with:")
        click.echo(f"  export NBPLUGINS_CONFIG={sandbox.config_file}")
        if detach:
            click.echo(f"stop it with: nbplugins sandbox down{_dir_flag(where)}")
            return
        click.echo(f"press Ctrl-C to stop it (or run: nbplugins sandbox down{_dir_flag(where)})", err=True)
        try:
            stack.wait(sandbox, echo=_echo)
        except lifecycle.Interrupted:
            click.echo("sandbox stopped", err=True)


@group.command("status")
@_dir_option
@click.option("--check", "run_checks", is_flag=True,
              help="Also prove each running service faithful with its official client.")
def status(directory: str | None, run_checks: bool) -> None:
    """Show what runs where (each PID checked)."""
    from nbplugins.errors import NbpluginsError
    from nbplugins.sandbox import stack, state

    where = _directory(directory)
    current = stack.status(where)
    if current is None:
        click.echo(f"no sandbox has run in {where}; start one with: {state.up_command(where)}")
        return
    alive = [name for name, entry in current["services"].items() if entry["alive"]]
    mode = "detached" if current.get("detached") else f"foreground, pid {current.get('pid')}"
    if alive:
        click.echo(f"sandbox in {where}: running since {current.get('started')} ({mode})")
    else:
        last = (f"{current.get('status')} at {current['stopped']}" if current.get("stopped")
                else "its `up` process ended without stopping it")
        click.echo(f"sandbox in {where}: not running ({last}); start it with: {state.up_command(where)}")
    for name, entry in current["services"].items():
        facts = ", ".join(f"{k} {v}" for k, v in (entry.get("info") or {}).items())
        click.echo(f"  {name:<9} {'running' if entry['alive'] else 'stopped':<8} pid {entry.get('pid'):<8} "
                   f"{entry.get('url'):<26} {facts}".rstrip())
    if alive:
        click.echo(f"config: export NBPLUGINS_CONFIG={where / state.CONFIG}")
    if run_checks:
        failed = []
        for name, ok, what in stack.check(where):
            click.echo(f"  check {name:<9} {'ok' if ok else 'FAILED'}: {what}")
            if not ok:
                failed.append(name)
        if failed:
            raise NbpluginsError(f"the faithful check failed for {', '.join(failed)}")


@group.command("down")
@_dir_option
def down(directory: str | None) -> None:
    """Stop everything the sandbox started, by PID (also after a crash of `up`)."""
    from nbplugins.sandbox import stack

    where = _directory(directory)
    stopped = stack.down(where)
    if stopped:
        click.echo(f"stopped the sandbox in {where}: {', '.join(stopped)}")
    else:
        click.echo(f"nothing running in {where}")


@group.command("services")
def services_cmd() -> None:
    """List the services the sandbox can start."""
    from nbplugins.sandbox import registry

    for name in registry.names():
        service = registry.SERVICES[name]
        missing = [t.package for t in service.tools if not t.found()]
        note = f"  (missing: {', '.join(missing)}; {registry.INSTALL})" if missing else ""
        click.echo(f"{name:<9} {service.summary}{note}")
