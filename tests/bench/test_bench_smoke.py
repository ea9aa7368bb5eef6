"""A tiny run of each benchmark: it must produce its figures and exit 0. Timings are never asserted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from klaviyo_segment.bench.runner import BenchResult, Figure, Options, render, run_one
from klaviyo_segment.cli.app import app

runner = CliRunner()


def _names(result: BenchResult) -> list[str]:
    return [f.name for f in result.figures]


def test_figure_ratio_direction() -> None:
    assert Figure("floor", 50, "x", 100).ratio == 0.5
    assert Figure("ceiling", 0.5, "s", 1.0, lower_is_better=True).ratio == 2.0
    assert Figure("no target", 3, "x").met is None


def test_mapping_cli_json() -> None:
    out = runner.invoke(app, ["bench", "mapping", "--messages", "300", "--json"])
    assert out.exit_code == 0, out.output
    document = json.loads(out.stdout.strip().splitlines()[-1])
    figures = document["results"][0]["figures"]
    assert {f["name"].split(" (")[0] for f in figures} >= {"track-default", "identify-default", "ecommerce"}
    assert all(f["value"] and f["value"] > 0 for f in figures)
    assert document["results"][0]["peak_rss_mb"]


def test_unknown_name_is_usage_error() -> None:
    from klaviyo_segment.errors import ConfigError

    out = runner.invoke(app, ["bench", "nope"])
    assert isinstance(out.exception, ConfigError)  # app.main turns it into exit 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["delivery", "profiles"])
def test_throughput_benches(name: str, prefect_server: str) -> None:
    from klaviyo_segment.devkit.cli.bench import bench_function

    options = Options(scale=1.0, messages=150, quick=True, window_s=3.0)
    result = run_one(name, bench_function(name), options)
    assert result.error is None, result.error
    assert any("ceiling" in n for n in _names(result))
    assert all(f.value is not None for f in result.figures if "/ naive" not in f.name)
    assert "bench (this process)" in " ".join(result.peak_rss_mb)
    assert name in render([result], as_json=False, options=options)


@pytest.mark.slow
def test_ingress_bench() -> None:
    from klaviyo_segment.bench import ingress

    result = run_one("ingress", ingress.run, Options(messages=300, quick=True))
    assert result.error is None, result.error
    by_name: dict[str, Any] = {f.name: f for f in result.figures}
    assert by_name["batched (1000/request) events/s accepted"].value > 0
    assert by_name["single ack latency p99"].value is not None


@pytest.mark.slow
def test_latency_bench(prefect_server: str) -> None:
    """Sandbox and load generator in their own processes, serve's ingress with inline sync-audiences runs here."""
    from klaviyo_segment.bench import latency

    result = run_one("latency", latency.run, Options(scale=1.0, messages=12))
    assert result.error is None, result.error
    by_name: dict[str, Any] = {f.name.split(" (")[0]: f for f in result.figures}
    assert by_name["enter -> member p95"].value > 0
    assert by_name["enter -> member p50"].value <= by_name["enter -> member max"].value
    labels = " ".join(result.peak_rss_mb)
    assert "sandbox" in labels and "load generator" in labels


def test_validation_bench_reports_both_paths() -> None:
    from klaviyo_segment.devkit.cli.bench import bench_function

    result = run_one("validation", bench_function("validation"), Options(messages=40, quick=True))
    assert result.error is None, result.error
    names = _names(result)
    for body in ("bulk_create_events", "bulk_import_profiles"):
        assert f"{body} jsonschema (old)" in names and f"{body} compiled (new)" in names
    assert all(f.value and f.value > 0 and "CPU s / 1,000" in f.note for f in result.figures)
    assert "load average" in " ".join(result.notes)
