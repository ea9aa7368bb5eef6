"""``klaviyo-segment demo [--keep]``: sandbox + local Prefect + receiver + flows, end to end, with a report."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        keep: bool = typer.Option(
            False, "--keep", help="Keep everything running (explore the Prefect UI) until Ctrl-C."
        ),
        count: int = typer.Option(150, "--count", help="Segment messages in the replayed stream."),
        seed: int = typer.Option(7, "--seed", help="Stream seed (same seed, same stream)."),
    ) -> None:
        """Replay a realistic Segment stream (all six templates) and Klaviyo engagement through the pipeline.

        Exit 0 when every stage did what it should; 1 when a check failed (each problem is printed).
        """
        from klaviyo_segment import devkit

        devkit.require("demo")
        import asyncio
        import logging

        from klaviyo_segment.devkit.demo import run_demo

        logging.basicConfig(level=logging.WARNING)
        for handler in logging.getLogger().handlers:  # Prefect's INFO records propagate here; the UI keeps them
            handler.setLevel(logging.WARNING)
        try:
            code = asyncio.run(run_demo(keep=keep, count=count, seed=seed))
        except KeyboardInterrupt:
            code = 0 if keep else 1
        raise typer.Exit(code)
