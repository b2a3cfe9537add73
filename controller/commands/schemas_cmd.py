"""`rollout schemas export DIR`."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("schemas")
def schemas_group() -> None:
    """The wire contracts."""


@schemas_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def export_cmd(directory: Path) -> None:
    """Write a JSON Schema (draft 2020-12) per event type into DIRECTORY."""
    from schemas.export import export

    for path in export(directory):
        click.echo(str(path))
