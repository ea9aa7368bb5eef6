"""``klaviyo-segment dead-letters list|show|replay|purge``: look at, retry and clean up failed messages.

The store URL follows the usual precedence (``$KLAVIYO_SEGMENT_STORE_URL`` > ``--config`` ``store.url`` >
default). ``show`` prints the stored message as is: it is the operator's own data, needed to diagnose.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from klaviyo_segment.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="Config YAML (store.url; mapping tables for replay).")


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w``; anything else is a usage error (exit 2)."""
    match = _DURATION.match(text or "")
    if not match:
        raise ConfigError(f"--older-than: expected a duration like 7d, 12h or 30m, got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def format_age(created: datetime, now: datetime | None = None) -> str:
    seconds = max(0, int(((now or datetime.now(UTC)) - created).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _store_config(config: Path | None) -> dict[str, Any] | None:
    from klaviyo_segment.config_loading import load_process_config

    app_config, _ = load_process_config(config)
    return app_config.model_dump(mode="python", exclude_unset=True) if config else None


async def _with_store(config: dict[str, Any] | None, action: Any) -> Any:
    from klaviyo_segment.settings import resolve_store_url
    from klaviyo_segment.store import Store

    store = await Store.open(resolve_store_url(config=config))
    try:
        return await action(store)
    finally:
        await store.close()


def _run(config: Path | None, action: Any) -> Any:
    import asyncio

    return asyncio.run(_with_store(_store_config(config), action))


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Failed messages: list, show, replay through their flow, purge.", no_args_is_help=True)
    app.add_typer(group, name="dead-letters")

    @group.command("list")
    def list_command(
        flow: str | None = typer.Option(None, "--flow", help="Only this flow's dead letters."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Oldest first: id, message id, flow, reason, age."""
        letters = _run(config, lambda store: store.list_dead_letters(flow=flow))
        if as_json:
            for d in letters:
                typer.echo(
                    json.dumps(
                        {
                            "id": d.id,
                            "message_id": d.message_id,
                            "flow": d.flow,
                            "reason": d.reason,
                            "created_at": d.created_at.isoformat(),
                            "attempts": d.attempts,
                        },
                        ensure_ascii=False,
                    )
                )
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"dead letters ({len(letters)})")
        for column in ("id", "message id", "flow", "reason", "age", "attempts"):
            table.add_column(column)
        for d in letters:
            table.add_row(d.id, str(d.message_id or ""), d.flow, d.reason, format_age(d.created_at), str(d.attempts))
        Console(width=200).print(table)

    @group.command("show")
    def show_command(
        dead_letter_id: str = typer.Argument(..., metavar="ID", help="The dead letter's own id."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """The full record (message included) as JSON; exit 1 when there is no such dead letter."""
        letter = _run(config, lambda store: store.get_dead_letter(dead_letter_id))
        if letter is None:
            typer.echo(f"no dead letter with id {dead_letter_id!r} (ids are listed by `dead-letters list`)", err=True)
            raise typer.Exit(1)
        record = {
            "id": letter.id,
            "message_id": letter.message_id,
            "flow": letter.flow,
            "reason": letter.reason,
            "error": letter.error,
            "attempts": letter.attempts,
            "created_at": letter.created_at.isoformat(),
            "updated_at": letter.updated_at.isoformat(),
            "message": letter.message,
        }
        typer.echo(json.dumps(record, ensure_ascii=False, indent=2, default=str))

    @group.command("replay")
    def replay_command(
        flow: str | None = typer.Option(None, "--flow", help="Only this flow's dead letters."),
        dead_letter_id: list[str] | None = typer.Option(None, "--id", help="Only these ids."),
        as_json: bool = typer.Option(False, "--json", help="Summary as a JSON line last."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Run the replay-dead-letters flow; exit 1 when some dead letters still fail."""
        import asyncio

        from klaviyo_segment.cli.commands.run import print_outcomes
        from klaviyo_segment.config_loading import load_process_config
        from klaviyo_segment.flows.replay_dead_letters import replay_dead_letters
        from klaviyo_segment.run_state import call_flow

        _, document = load_process_config(config)
        # the run ends Failed when letters fail again: read the summary from its state instead of raising
        summary, _state = asyncio.run(
            call_flow(replay_dead_letters, flow=flow, ids=dead_letter_id or None, config=document)
        )
        print_outcomes(summary)
        typer.echo(f"resolved {summary['resolved']}, remaining {summary['remaining']}", err=True)
        if as_json:
            typer.echo(json.dumps({k: v for k, v in summary.items() if k not in ("outcomes", "flows")}))
        raise typer.Exit(1 if summary["failed"] or summary["remaining"] else 0)

    @group.command("purge")
    def purge_command(
        older_than: str | None = typer.Option(
            None, "--older-than", help="Only those last failed before, e.g. 7d, 12h."
        ),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Delete dead letters (all of them without --older-than)."""
        age = parse_duration(older_than) if older_than is not None else None
        removed = _run(config, lambda store: store.purge_dead_letters(older_than=age))
        typer.echo(f"purged {removed} dead letter(s)")
