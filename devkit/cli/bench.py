"""``klaviyo-segment bench [NAME] [--scale F] [--messages N] [--quick] [--json]``: the benchmark suite.

Each benchmark prints its figures with target and ratio; none asserts a timing. Exit 0 when every benchmark
ran (targets missed or not), 1 when one could not run, 2 for an unknown name or bad flags.
"""

from __future__ import annotations

import os
from typing import Any

import typer

from klaviyo_segment.errors import ConfigError

#: name -> module under klaviyo_segment.bench exposing ``run(Options) -> BenchResult``.
NAMES = ("delivery", "profiles", "mapping", "ingress", "latency", "backfill", "validation")


def bench_function(name: str) -> Any:
    """The benchmark callable; ``backfill`` lives in its own module with its own ``run(rows, scale)``."""
    import importlib

    if name not in NAMES:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(NAMES)}")
    if name == "backfill":
        return _backfill
    return importlib.import_module(f"klaviyo_segment.bench.{name}").run


def _backfill(options: Any) -> Any:
    """Adapter: numbers of ``bench.backfill.run`` become figures (its keys name them)."""
    from klaviyo_segment.bench import backfill
    from klaviyo_segment.bench.runner import BenchResult

    rows = options.messages or (10_000 if options.quick else 100_000)
    out = backfill.run(rows, options.scale)
    result = BenchResult(bench="backfill")
    for key, value in out.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result.add(key, float(value), "")
        else:
            result.notes.append(f"{key}: {value}")
    return result


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        name: str | None = typer.Argument(None, help=f"One of: {', '.join(NAMES)}. Omit to run all."),
        scale: float | None = typer.Option(
            None,
            "--scale",
            help="Sandbox rate limits scale=F (default 1 = "
            "Klaviyo's real limits for delivery, profiles, latency; 0.1 for the "
            "others). Ratios are to the ceiling at that scale.",
        ),
        messages: int | None = typer.Option(
            None, "--messages", help="Messages per benchmark (default: enough to fill the measured windows)."
        ),
        quick: bool = typer.Option(False, "--quick", help="Span one steady window and small sizes (smoke use)."),
        windows: int = typer.Option(3, "--windows", help="Steady (60 s) windows the throughput runs span."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document as the last stdout line."),
    ) -> None:
        """Measure delivery, profiles, mapping, ingress, latency and the sandbox's body validation."""
        from klaviyo_segment import devkit

        devkit.require("bench", extra=("klaviyo_api",))  # checked before any benchmark starts
        if scale is not None and scale <= 0:
            raise typer.BadParameter("must be > 0", param_hint="--scale")
        if messages is not None and messages <= 0:
            raise typer.BadParameter("must be > 0", param_hint="--messages")
        if windows <= 0:
            raise typer.BadParameter("must be > 0", param_hint="--windows")
        names = [name] if name else list(NAMES)
        functions = {n: bench_function(n) for n in names}
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

        from klaviyo_segment.bench import runner
        from klaviyo_segment.bench.runner import Options, render, run_one

        def live(bench_name: str, figure: Any) -> None:
            """Each figure on stderr as soon as it is measured; the table/JSON still follows at the end."""
            target = (
                ""
                if figure.target is None
                else f" (target {'<=' if figure.lower_is_better else '>='}{figure.target:g})"
            )
            value = "-" if figure.value is None else f"{figure.value:,.3f}"
            typer.echo(f"bench: {bench_name}: {figure.name}: {value} {figure.unit}{target}", err=True)

        runner.LIVE = live

        results = []
        for bench_name, function in functions.items():
            options = Options(
                scale=scale if scale is not None else _default_scale(bench_name),
                messages=messages,
                quick=quick,
                windows=windows,
            )
            typer.echo(f"bench: running {bench_name} (scale={options.scale:g}) ...", err=True)
            result = run_one(bench_name, function, options)
            results.append(result)
            if not as_json:
                typer.echo(render([result], as_json=False, options=options))
        if as_json:
            typer.echo(
                render(
                    results,
                    as_json=True,
                    options=Options(scale=scale or 0.1, messages=messages, quick=quick, windows=windows),
                )
            )
        raise typer.Exit(1 if any(r.error for r in results) else 0)


def _default_scale(name: str) -> float:
    if name == "profiles":
        from klaviyo_segment.bench.profiles import DEFAULT_SCALE

        return DEFAULT_SCALE
    if name in ("delivery", "profiles", "latency"):
        return 1.0  # Klaviyo's real limits: the figure is about a trickle, not about saturating a ceiling
    return 0.1
