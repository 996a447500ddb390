"""``nbplugins elyra``: Switch the Elyra editor's local runtime between nbplugins and Elyra's own."""

from __future__ import annotations

import click


@click.group(name="elyra")
def group() -> None:
    """Switch the Elyra editor's local runtime between nbplugins and Elyra's own."""
