"""``klaviyo-segment run FLOW --input FILE [--config FILE] [--json]``: one flow over a file of messages, as a
real Prefect flow run (ephemeral local server, or PREFECT_API_URL), against KLAVIYO_BASE_URL/SEGMENT_BASE_URL."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from klaviyo_segment import constants

#: Without a terminal (stderr to a file or a CI log), one plain progress line this often.
PLAIN_PROGRESS_SECONDS = 10.0


def print_outcomes(summary: dict[str, Any], more: int = 0) -> None:
    """stderr: a table of skipped and failed messages with reasons (``more``: rows not even kept)."""
    from rich.console import Console
    from rich.table import Table

    rows = [o for o in summary.get("outcomes", []) if o.get("status") != "sent"]
    console = Console(stderr=True)
    if rows:
        table = Table(title=f"{summary['flow']}: skipped and failed messages")
        for column in ("message_id", "type", "status", "reason"):
            table.add_column(column)
        for o in rows[:500]:
            table.add_row(str(o.get("message_id")), str(o.get("type") or ""), o["status"], str(o.get("reason") or ""))
        console.print(table)
        if len(rows) + more > 500:
            console.print(f"... and {len(rows) + more - 500} more")
    console.print(
        f"{summary['flow']}: received {summary['received']}, sent {summary['sent']}, "
        f"skipped {summary['skipped']}, failed {summary['failed']}"
    )


def register(app: typer.Typer) -> None:
    from klaviyo_segment.flows import names  # the registry's names: no flow module (or Prefect) is imported

    @app.command("run")
    def run(
        flow: str = typer.Argument(..., help=f"Flow name: {', '.join(names())}."),
        input: Path | None = typer.Option(None, "--input", "-i", help="JSON lines or a JSON array of messages."),
        config: Path | None = typer.Option(None, "--config", "-c", help="Config YAML (mapping tables etc.)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as a JSON line last on stdout."),
        since: str | None = typer.Option(None, "--since", help="engagement-to-segment polling start (ISO-8601)."),
        batch_size: int = typer.Option(
            constants.RUN_BATCH_SIZE, "--batch-size", min=1, hidden=True, help="Messages per staged inbox batch."
        ),
        batches_per_run: int = typer.Option(
            constants.RUN_BATCHES_PER_RUN, "--batches-per-run", min=1, hidden=True, help="Staged batches per flow run."
        ),
    ) -> None:
        """Run one flow on a file of messages (or poll Klaviyo for engagement-to-segment without --input)."""
        import asyncio

        from klaviyo_segment.config_loading import load_process_config
        from klaviyo_segment.errors import ConfigError
        from klaviyo_segment.flows import get_spec

        spec = get_spec(flow)
        app_config, document = load_process_config(config)
        app_config.require(flow)
        kwargs: dict[str, Any] = {"config": document}
        if input is not None:
            totals = _run_file(spec, input, document, batch_size, batches_per_run)
            print_outcomes({**totals.summary, "outcomes": totals.outcomes}, totals.more)
            if as_json:
                typer.echo(json.dumps(totals.summary))
            raise typer.Exit(1 if totals.summary["failed"] else 0)
        if flow == "engagement-to-segment":
            kwargs["poll"] = True
            if since:
                from datetime import datetime

                try:
                    datetime.fromisoformat(since.replace("Z", "+00:00"))
                except ValueError:
                    raise ConfigError(f"--since: not an ISO-8601 datetime: {since!r}") from None
                kwargs["since"] = since
        else:
            raise ConfigError(f"flow {flow!r} needs --input FILE")
        from klaviyo_segment.run_state import call_flow

        # return_state: a run with dead letters ends Failed, which would raise before the summary is printed
        summary, _state = asyncio.run(call_flow(spec.flow, **kwargs))
        print_outcomes(summary)
        if as_json:
            typer.echo(json.dumps({k: v for k, v in summary.items() if k != "outcomes"}))
        raise typer.Exit(1 if summary["failed"] else 0)


def _run_file(spec: Any, path: Path, document: Any, batch_size: int, batches_per_run: int) -> Any:
    """The file staged in the state store and delivered by flow runs that get only batch ids, with a progress
    bar on stderr (stdout stays for the ``--json`` line)."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from klaviyo_segment.run_file import run_file

    tasks: dict[str, TaskID] = {}
    console = Console(stderr=True)
    started = time.monotonic()
    last_line = [float("-inf")]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as bar:

        def progress(phase: str, completed: int, total: int | None) -> None:
            label = "staging (bytes)" if phase == "staging" else f"{spec.name} (messages)"
            if console.is_terminal:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(label, total=total)
                bar.update(tasks[phase], completed=completed, total=total)
                return
            # stderr is a file or a CI log: a plain line every PLAIN_PROGRESS_SECONDS (and at each phase's end)
            now = time.monotonic()
            if now - last_line[0] >= PLAIN_PROGRESS_SECONDS or completed == total:
                last_line[0] = now
                of = f" of {total:,} ({completed / total:.0%})" if total else ""
                print(
                    f"{label}: {completed:,}{of}, {now - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

        return asyncio.run(
            run_file(spec, path, document, progress, batch_size=batch_size, batches_per_run=batches_per_run)
        )
