"""``nbplugins dataminer``: Run D4Science DataMiner (OGC WPS) processes and bring their results home."""

from __future__ import annotations

import click


@click.group(name="dataminer")
def group() -> None:
    """Run D4Science DataMiner (OGC WPS) processes and bring their results home."""
