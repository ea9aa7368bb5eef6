"""``klaviyo-segment preview FLOW --input FILE [--config FILE]``: the requests a flow would send, in order,
without any network call and without writing the state store."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("preview")
    def preview(
        flow: str = typer.Argument(..., help="Flow name (see `run`)."),
        input: Path = typer.Option(..., "--input", "-i", help="JSON lines or a JSON array of messages."),
        config: Path | None = typer.Option(None, "--config", "-c", help="Config YAML (mapping tables etc.)."),
    ) -> None:
        """Print one JSON object per request ({"method","path","body"}) on stdout; skipped/failed on stderr."""
        import asyncio

        from klaviyo_segment.cli.commands.run import print_outcomes
        from klaviyo_segment.config_loading import load_process_config
        from klaviyo_segment.flows import get_spec
        from klaviyo_segment.inputs import read_messages
        from klaviyo_segment.preview import preview_flow

        get_spec(flow)  # an unknown flow is exit 2 before anything is read
        app_config, _ = load_process_config(config)
        app_config.require(flow)
        document = app_config.mapping_document() if config else None
        messages = read_messages(input)
        lines, summary = asyncio.run(preview_flow(flow, messages, document))
        for line in lines:
            typer.echo(json.dumps(line, ensure_ascii=False))
        print_outcomes(summary)
        raise typer.Exit(1 if summary["failed"] else 0)
