"""``klaviyo-segment backfill --input PATH [--format csv|parquet|jsonl] [--config FILE] [--list-id ID] [--force]``.

Runs in this process (no Prefect server needed) with a rich progress bar on stderr; the ``backfill-profiles``
flow runs the very same code with Prefect artifacts instead. See docs/backfill.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

LIST_WARNING = (
    'warning: adding profiles to list {list_id} can trigger its "Added to list" flows for every '
    "imported profile; pause those flows first if that is not intended"
)


def _progress_bar() -> tuple[Any, Any]:
    """(rich Progress, callback): rows read with rows/s and ETA."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = progress.add_task("rows", total=None, rate="-")

    def update(done: int, total: int | None, _report: Any) -> None:
        progress.update(task, completed=done, total=total)
        speed = progress.tasks[0].speed
        progress.update(task, rate=f"{speed:,.0f}" if speed else "-")

    return progress, update


def register(app: typer.Typer) -> None:
    @app.command("backfill")
    def backfill(
        input: Path = typer.Option(..., "--input", "-i", help="Export with one row per user (CSV, Parquet, JSONL)."),
        format: str | None = typer.Option(None, "--format", help="csv | parquet | jsonl (default: by extension)."),
        config: Path | None = typer.Option(None, "--config", "-c", help="Config YAML (templates, credentials)."),
        list_id: str | None = typer.Option(None, "--list-id", help="Also add every imported profile to this list."),
        force: bool = typer.Option(False, "--force", help="Send again even if this file was already backfilled."),
        max_per_job: int = typer.Option(
            10_000, "--max-per-job", hidden=True, min=1, max=10_000, help="Profiles per import job (tests and tuning)."
        ),
        jobs_in_flight: int = typer.Option(
            6, "--jobs-in-flight", hidden=True, min=1, max=50, help="Import jobs processing at once."
        ),
    ) -> None:
        """Initial profile sync: bulk-import every row of a Segment/warehouse export into Klaviyo (resumable)."""
        import asyncio
        import json

        from klaviyo_segment.backfill import BackfillOptions, backfill_file, detect_format
        from klaviyo_segment.config_loading import load_process_config
        from klaviyo_segment.settings import get_process_config

        fmt = detect_format(input, format)
        app_config, _ = load_process_config(config)
        if list_id:
            typer.echo(LIST_WARNING.format(list_id=list_id), err=True)
        options = BackfillOptions(
            list_ids=[list_id] if list_id else [], force=force, max_profiles=max_per_job, jobs_in_flight=jobs_in_flight
        )
        progress, update = _progress_bar()
        with progress:
            report = asyncio.run(
                backfill_file(
                    input, config=app_config, raw_config=get_process_config(), fmt=fmt, options=options, progress=update
                )
            )
        if report.already_complete:
            typer.echo(
                f"backfill: {input} was already backfilled ({report.resumed_rows} profiles sent); nothing "
                "sent (use --force to send it again)"
            )
            raise typer.Exit(0)
        typer.echo(
            f"backfill: rows {report.rows}, sent {report.sent}, skipped {report.skipped}, failed "
            f"{report.failed}, invalid {report.invalid}, already sent earlier {report.resumed_rows} "
            f"({report.jobs_submitted} jobs, {report.seconds:.1f}s)"
        )
        if report.warnings:
            typer.echo(
                f"{report.warnings} warning(s) (values dropped, rows still imported), e.g. "
                + " | ".join(report.warning_samples[:3]),
                err=True,
            )
        if report.rejects_path:
            typer.echo(f"rejected rows with reasons: {report.rejects_path}")
        typer.echo(json.dumps(report.as_dict()))
        raise typer.Exit(report.exit_code)
