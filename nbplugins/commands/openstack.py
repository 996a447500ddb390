"""``nbplugins openstack``: OpenStack compute through the Check-in token."""

from __future__ import annotations

import click


@click.group(name="openstack")
def group() -> None:
    """OpenStack compute through the Check-in token."""
