"""``nbplugins processes``: Run OGC API - Processes jobs (D4Science CCP, pygeoapi, ADES) and bring their results home."""

from __future__ import annotations

import click


@click.group(name="processes")
def group() -> None:
    """Run OGC API - Processes jobs (D4Science CCP, pygeoapi, ADES) and bring their results home."""
