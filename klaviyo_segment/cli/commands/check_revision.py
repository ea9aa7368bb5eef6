"""`klaviyo-segment check-revision --spec PATH`: would our Klaviyo requests survive another API revision?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command("check-revision")(check_revision_command)


def check_revision_command(
    spec: Path = typer.Option(..., "--spec", help="Official Klaviyo OpenAPI file (full, or trimmed like ours)."),
    base: Path | None = typer.Option(
        None, "--base", help="What we use (default: the trimmed schema of the pinned revision shipped with us)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per changed operation, then a summary."),
) -> None:
    """Per operation we use: fields removed, added, renamed, or changed in type or requiredness.
    Exit 1 when a used operation or field is removed or changed incompatibly, else 0."""
    from klaviyo_segment.revision_check import check_revision

    used, other, reports = check_revision(spec, base)
    changed = [r for r in reports if r.changes]
    breaking = [r for r in reports if r.breaking]
    if as_json:
        for report in changed:
            typer.echo(
                json.dumps(
                    {
                        "operation": report.operation_id,
                        "breaking": report.breaking,
                        "changes": [
                            {"kind": c.kind, "path": c.path, "detail": c.detail, "breaking": c.breaking}
                            for c in report.changes
                        ],
                    }
                )
            )
    else:
        typer.echo(
            f"comparing {len(reports)} operations we use (revision {used.get('revision')}) "
            f"with {spec} (revision {other.get('revision')})"
        )
        for report in changed:
            typer.echo(f"\n{report.operation_id}{'  [BREAKING]' if report.breaking else ''}")
            for c in report.changes:
                mark = "!" if c.breaking else " "
                typer.echo(f"  {mark} {c.kind:<9} {c.path or '(operation)'}: {c.detail}")
    summary: dict[str, Any] = {
        "operations": len(reports),
        "changed": len(changed),
        "breaking": len(breaking),
        "breaking_operations": [r.operation_id for r in breaking],
    }
    typer.echo(
        json.dumps(summary)
        if as_json
        else f"\n{len(changed)} operation(s) changed, {len(breaking)} with breaking changes"
        + (f": {', '.join(summary['breaking_operations'])}" if breaking else "")
    )
    raise typer.Exit(1 if breaking else 0)
