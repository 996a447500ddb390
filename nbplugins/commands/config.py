"""``nbplugins config``: where the settings come from, what they are, and every key there is."""

from __future__ import annotations

import click


@click.group(name="config")
def group() -> None:
    """Show the effective configuration, or the reference of every setting."""


@group.command("show")
def show() -> None:
    """The settings in effect (file and environment), secrets masked."""
    import dataclasses

    from nbplugins import config

    cfg = config.get()
    click.echo(f"# from {cfg.source}")

    def walk(obj: object, prefix: str) -> None:
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            if f.name == "source" and not prefix:
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
                for name, section in value.items():
                    walk(section, f"{prefix}{f.name}.{name}.")
            elif value not in (None, "", [], {}):
                shown = "***" if f.metadata.get("secret") else config.json_like(value)
                click.echo(f"{prefix}{f.name} = {shown}")

    walk(cfg, "")


@group.command("reference")
def reference() -> None:
    """Every setting: key, type, default, environment variables (Markdown)."""
    from nbplugins import config

    click.echo(config.reference_markdown(), nl=False)
