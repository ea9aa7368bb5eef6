"""The ``klaviyo-segment`` command. Each command lives in its own module under ``cli/commands`` and
registers itself through ``register(app)``, so commands stay small and independent. Command modules import
heavy dependencies inside their functions: ``--help`` must stay fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from klaviyo_segment.cli import commands
from klaviyo_segment.errors import ConfigError

app = typer.Typer(
    name="klaviyo-segment",
    help="Segment <-> Klaviyo integration on Prefect: run flows, preview requests, serve webhooks, sandbox.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point: maps ConfigError to exit 2 with a one-line message."""
    try:
        app(standalone_mode=True)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
