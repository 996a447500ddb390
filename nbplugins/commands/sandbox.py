"""``nbplugins sandbox``: Every service on 127.0.0.1 in one command, for trying templates and pipelines."""

from __future__ import annotations

import click


@click.group(name="sandbox")
def group() -> None:
    """Every service on 127.0.0.1 in one command, for trying templates and pipelines."""
