"""`klaviyo-segment simulate`: deliver generated (or replayed) Segment messages to a receiver like Segment does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from klaviyo_segment.constants import ENV_SEGMENT_SHARED_SECRET
from klaviyo_segment.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Replay input must be fully usable before anything is sent: a bad line is exit 2, not a partial run."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--input: cannot read {path}: {exc.__class__.__name__}") from exc
    messages: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"--input: line {number} of {path} is not valid JSON") from exc
        if not isinstance(message, dict):
            raise ConfigError(f"--input: line {number} of {path} is not a JSON object")
        messages.append(message)
    return messages


def simulate_command(
    to: str = typer.Option(..., "--to", help="Receiver URL (e.g. http://127.0.0.1:8787/segment)."),
    secret: str | None = typer.Option(
        None,
        "--secret",
        envvar=ENV_SEGMENT_SHARED_SECRET,
        show_envvar=True,
        help="Shared secret for X-Signature (HMAC-SHA1).",
    ),
    batch: int = typer.Option(0, "--batch", help="0 or 1 = single events; N > 1 = JSON arrays of up to N."),
    count: int = typer.Option(100, "--count", help="How many messages to generate (ignored with --input)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the generated stream and the retry jitter."),
    input_file: Path | None = typer.Option(None, "--input", help="JSON lines to replay instead of generating."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight."),
    max_attempts: int = typer.Option(5, "--max-attempts", help="Attempts per request before giving up."),
    timeout: float = typer.Option(10.0, "--timeout", help="Per-request timeout in seconds (Actions: 10 s)."),
    max_seconds: float = typer.Option(300.0, "--max-seconds", help="Bound on the whole run."),
) -> None:
    """Send Segment messages as the Webhooks (Actions) destination does: signed, batched or single, retried on
    408/423/429/5xx (not 501) and timeouts. Prints progress to stderr and a final JSON line on stdout:
    {"sent", "acknowledged", "given_up", "retries", "elapsed_s"}. Exit 1 if any message was given up."""
    from klaviyo_segment import devkit

    devkit.require("simulate")
    import asyncio

    from klaviyo_segment.devkit.sandbox.segment.generators import generate_stream
    from klaviyo_segment.devkit.sandbox.segment.simulator import deliver

    if not to.startswith(("http://", "https://")):
        raise typer.BadParameter("must be an http(s) URL", param_hint="--to")
    if not secret:
        raise ConfigError(f"--secret (or {ENV_SEGMENT_SHARED_SECRET}) is required: receivers verify X-Signature")
    if batch < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--batch")
    for name, value in (
        ("--count", count),
        ("--concurrency", concurrency),
        ("--max-attempts", max_attempts),
        ("--timeout", timeout),
        ("--max-seconds", max_seconds),
    ):
        if value <= 0:
            raise typer.BadParameter("must be > 0", param_hint=name)
    messages = _read_jsonl(input_file) if input_file is not None else generate_stream(count, seed)
    step = max(1, len(messages) // 10)
    last_reported = [0]

    def progress(done: int, total: int) -> None:
        if done - last_reported[0] >= step or done == total:
            last_reported[0] = done
            typer.echo(f"simulate: {done}/{total} messages handled", err=True)

    typer.echo(
        f"simulate: sending {len(messages)} messages to {to} "
        f"({'batches of ' + str(batch) if batch > 1 else 'single events'})",
        err=True,
    )
    report = asyncio.run(
        deliver(
            to,
            messages,
            secret,
            batch_size=batch,
            concurrency=concurrency,
            max_attempts=max_attempts,
            timeout=timeout,
            max_seconds=max_seconds,
            seed=seed,
            progress=progress,
        )
    )
    typer.echo(
        f"simulate: p50 {report.p50 * 1000:.1f} ms, p95 {report.p95 * 1000:.1f} ms, statuses {report.statuses}",
        err=True,
    )
    typer.echo(json.dumps(report.summary()))
    raise typer.Exit(1 if report.given_up else 0)
