"""The ``nbplugins`` command line: wiring only; the library modules do the work.

Expected failures (:class:`~nbplugins.errors.NbpluginsError`) print one redacted line and
exit non-zero; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import logging
import sys
import time

import click

from nbplugins import __version__, secrets
from nbplugins.errors import NbpluginsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nbplugins")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show progress logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Repeatable, shareable notebook workflows for EGI, EOSC and D4Science hubs."""
    ctx.obj = {"debug": debug}
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
    from nbplugins.tokens import TokenResolver, relative, when

    tok = TokenResolver(source=source).inspect()
    c = tok.claims
    rows = [("source", tok.source)]
    if c.is_jwt:
        rows += [("subject", c.subject or "-"), ("issuer", c.issuer or "-"),
                 ("audience", ", ".join(c.audience) or "-")]
    else:
        rows += [("format", "opaque (not a JWT): subject and VOs unknown")]
    if tok.expires_at is not None:
        rows.append(("expires", f"{when(tok.expires_at)} ({relative(tok.seconds_left() or 0)})"))
    else:
        rows.append(("expires", "unknown"))
    if c.is_jwt:
        rows.append(("VOs", ", ".join(c.vos) or "none in the token"))
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


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map expected errors to one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    start = time.monotonic()
    try:
        cli.main(args=args, prog_name="nbplugins", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("nbplugins: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("nbplugins: interrupted", err=True)
        sys.exit(130)
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
