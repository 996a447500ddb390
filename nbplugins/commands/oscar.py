"""``nbplugins oscar``: Deploy and run OSCAR services; bring every output home."""

from __future__ import annotations

import click


@click.group(name="oscar")
def group() -> None:
    """Deploy and run OSCAR services; bring every output home."""
