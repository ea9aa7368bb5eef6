"""Dev-kit commands of the ``klaviyo-segment`` CLI (sandbox, simulate, demo, bench, chaos): one module each,
registered by ``register(app)``, which the product CLI calls through the ``klaviyo_segment.cli`` entry point."""

from __future__ import annotations

import importlib

import typer

#: The dev-kit command modules; the product CLI lists the same names to explain a missing dev kit.
COMMANDS = ("bench", "chaos", "demo", "sandbox", "simulate")


def register(app: typer.Typer) -> None:
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(app)
