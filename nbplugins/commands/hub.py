"""``nbplugins hub``: The JupyterHub REST API with the hub token."""

from __future__ import annotations

import click


@click.group(name="hub")
def group() -> None:
    """The JupyterHub REST API with the hub token."""
