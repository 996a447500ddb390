"""``nbplugins serve``: Serve notebooks into users' homes when an ELN (openBIS) links to them."""

from __future__ import annotations

import click


@click.group(name="serve")
def group() -> None:
    """Serve notebooks into users' homes when an ELN (openBIS) links to them."""
