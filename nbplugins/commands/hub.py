"""``nbplugins hub``: The JupyterHub REST API with the hub token."""

from __future__ import annotations

import click

_hub_option = click.option("--hub", default=None, metavar="NAME|URL",
                           help="Hub name (egi, eosc, [hubs.urls]), hub URL, or API base (…/hub/api).")


@click.group(name="hub")
def group() -> None:
    """The JupyterHub REST API with the hub token."""


@group.command("api")
@click.argument("method")
@click.argument("path")
@_hub_option
@click.option("--data", default=None, metavar="JSON", help="JSON request body.")
def api_cmd(method: str, path: str, hub: str | None, data: str | None) -> None:
    """Send METHOD PATH to the hub API (e.g. GET /users) and print the JSON answer."""
    import json

    from nbplugins import secrets
    from nbplugins.hub import api

    body = api.parse_data(data)
    with api.HubApi(hub) as client:
        answer = client.request(method, path, data=body)
    if answer is not None:
        click.echo(secrets.redact(json.dumps(answer, indent=2)))


@group.command("servers")
@_hub_option
@click.option("--user", default=None, help="Whose servers (default: the token's user).")
@click.option("--all", "every", is_flag=True, help="Every user's servers (needs the right to list users).")
def servers_cmd(hub: str | None, user: str | None, every: bool) -> None:
    """Show servers as a table: user, server, state, URL, last activity."""
    from nbplugins import secrets
    from nbplugins.hub import api

    with api.HubApi(hub) as client:
        models = {u["name"]: u for u in client.users()} if every else {(m := client.user(user))["name"]: m}
    rows = api.server_rows(models)
    columns = ["user", "server", "state", "url", "last activity"]
    if not rows:
        click.echo("no servers running")
        return
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo(secrets.redact("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip()))
