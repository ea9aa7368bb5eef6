"""`klaviyo-segment doctor [--config FILE]`: check credentials and what they can do; exit 1 if a check failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)


def _read_config(path: Path | None) -> dict[str, Any] | None:
    """An unreadable or non-mapping file is an unusable invocation (ConfigError -> exit 2)."""
    if path is None:
        return None
    import yaml

    from klaviyo_segment.errors import ConfigError

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {path}: cannot read it ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: the top level must be a mapping of settings")
    return data


def doctor_command(
    config: Path | None = typer.Option(None, "--config", help="Config YAML (klaviyo:/segment: sections)."),
) -> None:
    """Checks the Klaviyo key (scopes by harmless probes, pinned revision) and Segment reachability."""
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from klaviyo_segment.doctor import Check, run_doctor
    from klaviyo_segment.errors import ConfigError
    from klaviyo_segment.settings import resolve_klaviyo, resolve_segment

    data = _read_config(config)
    checks: list[Check] = []
    resolved: dict[str, Any] = {}
    for label, resolve in (("Klaviyo", resolve_klaviyo), ("Segment", resolve_segment)):
        try:
            resolved[label] = resolve({}, data)
        except ConfigError as exc:
            resolved[label] = None
            checks.append(Check(f"{label} credentials", False, "not usable", str(exc)))
    checks += asyncio.run(run_doctor(resolved["Klaviyo"], resolved["Segment"]))

    table = Table(title="klaviyo-segment doctor")
    for column in ("check", "result", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        mark = "[green]ok[/green]" if check.ok else "[red]FAILED[/red]"
        table.add_row(check.name, f"{mark} {check.result}", check.fix)
    Console(width=160).print(table)
    failed = [c for c in checks if not c.ok]
    typer.echo(f"{len(checks) - len(failed)} ok, {len(failed)} failed")
    raise typer.Exit(1 if failed else 0)
