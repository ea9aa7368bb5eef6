"""``klaviyo-segment blocks apply|show``: save a config file as the mapping-tables block, or print it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

blocks_app = typer.Typer(
    help="Save the config file's mapping tables as Prefect blocks, or show them.", no_args_is_help=True
)


@blocks_app.command("apply")
def apply(
    config: Path = typer.Option(..., "--config", help="YAML config file to save."),
    name: str = typer.Option("default", "--name", help="Block document name (flows load 'default')."),
) -> None:
    """Validate the config file and save it as a 'Klaviyo Segment Mapping Tables' block (needs a Prefect API)."""
    from klaviyo_segment.blocks.mapping import MappingTables
    from klaviyo_segment.config import load_config

    app_config = load_config(config)
    block = MappingTables.from_config(app_config)
    block.save(name, overwrite=True)
    typer.echo(
        json.dumps(
            {
                "block_type": MappingTables.get_block_type_name(),
                "name": name,
                "keys": sorted(block.document),
                "secrets_stored": False,
            }
        )
    )


@blocks_app.command("show")
def show(name: str = typer.Option("default", "--name", help="Block document name.")) -> None:
    """Print the saved mapping tables document as JSON."""
    from klaviyo_segment.blocks.mapping import MappingTables
    from klaviyo_segment.settings import load_saved_block

    block = load_saved_block(MappingTables, name)  # an invalid saved block: ConfigError naming the key (exit 2)
    if block is None:
        typer.echo(f"error: no mapping tables block named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(block.document, indent=2, sort_keys=True, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    app.add_typer(blocks_app, name="blocks")
