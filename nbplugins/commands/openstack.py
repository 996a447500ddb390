"""``nbplugins openstack``: OpenStack compute through the Check-in token."""

from __future__ import annotations

import click

_site_options = [
    click.option("--site", default=None, metavar="NAME", help="A site from [openstack.sites.NAME] (or [openstack] default)."),
    click.option("--auth-url", default=None, metavar="URL", help="A Keystone v3 URL instead of a named site."),
    click.option("--identity-provider", default=None, metavar="NAME", help="Keystone's identity provider (egi.eu)."),
    click.option("--protocol", default=None, metavar="NAME", help="Keystone's federation protocol (openid)."),
]


def _with_site(fn):  # type: ignore[no-untyped-def]
    for option in reversed(_site_options):
        fn = option(fn)
    return fn


def _target(site: str | None, auth_url: str | None) -> str | None:
    from nbplugins.errors import ValidationError

    if site and auth_url:
        raise ValidationError("give --site NAME or --auth-url URL, not both")
    return auth_url or site


def _table(rows: list[dict[str, str]], columns: list[str]) -> None:
    from nbplugins import secrets

    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo(secrets.redact("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip()))


@click.group(name="openstack")
def group() -> None:
    """OpenStack compute through the Check-in token."""


@group.command("servers")
@_with_site
@click.option("--project-id", default=None, metavar="ID", help="Project to scope to (32 hex characters).")
def servers_cmd(site: str | None, auth_url: str | None, identity_provider: str | None, protocol: str | None,
                project_id: str | None) -> None:
    """List a project's servers: name, status, flavor, addresses."""
    from nbplugins import openstack

    target = _target(site, auth_url)
    sess = openstack.session(target, project_id, identity_provider=identity_provider, protocol=protocol)
    found = openstack.servers(target, project_id, sess=sess)
    _table([{"name": s.name, "status": s.status, "flavor": s.flavor, "addresses": s.addresses, "id": s.id}
            for s in found], ["name", "status", "flavor", "addresses", "id"])


@group.command("projects")
@_with_site
def projects_cmd(site: str | None, auth_url: str | None, identity_provider: str | None,
                 protocol: str | None) -> None:
    """List the projects the token can scope to."""
    from nbplugins import openstack

    found = openstack.projects(_target(site, auth_url), identity_provider=identity_provider, protocol=protocol)
    _table([{"id": p.id, "name": p.name, "enabled": "yes" if p.enabled else "no"} for p in found],
           ["id", "name", "enabled"])
