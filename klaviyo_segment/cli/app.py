"""The ``klaviyo-segment`` command. Each command lives in its own module under ``cli/commands`` and
registers itself through ``register(app)``, so commands stay small and independent. Command modules import
heavy dependencies inside their functions: ``--help`` must stay fast.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from importlib.metadata import entry_points

#: Prefect's default (20 s) is too short for the first ``run`` on a fresh home on a busy machine: the ephemeral
#: server migrates a new SQLite database before it answers. Prefect reads its settings once, at import, so this
#: is set before anything imports prefect; a value the user set wins.
EPHEMERAL_STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_STARTUP_SECONDS = "120"


def prefect_process_defaults(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Defaults for Prefect settings this CLI needs; never overrides a value already set."""
    environ.setdefault(EPHEMERAL_STARTUP_TIMEOUT, EPHEMERAL_STARTUP_SECONDS)


prefect_process_defaults()

import typer  # noqa: E402  # after the Prefect defaults: a command module may import prefect

from klaviyo_segment.cli import commands  # noqa: E402
from klaviyo_segment.errors import ConfigError  # noqa: E402

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


#: Commands that live in the dev kit (``klaviyo_segment.devkit.cli``), listed so that an install without it says
#: what to install instead of "No such command".
DEVKIT_COMMANDS = ("bench", "chaos", "demo", "sandbox", "simulate")
DEVKIT_HINT = "pip install 'klaviyo-segment[devkit]'"


def _devkit_missing(name: str, reason: str) -> None:
    @app.command(
        name,
        help=f"(dev kit, not installed: {DEVKIT_HINT})",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def missing() -> None:
        raise ConfigError(
            f"`klaviyo-segment {name}` is part of the dev kit, which is not usable here ({reason}): {DEVKIT_HINT}"
        )


def _register_plugins() -> None:
    """Commands contributed through the ``klaviyo_segment.cli`` entry-point group (the dev kit). The product never
    imports the dev kit by name; when it is absent or broken, its commands explain which extra to install."""
    loaded = False
    for ep in entry_points(group="klaviyo_segment.cli"):
        try:
            ep.load()(app)
            loaded = loaded or ep.name == "devkit"
        except ImportError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            for name in DEVKIT_COMMANDS:
                _devkit_missing(name, reason)
            loaded = True
    if not loaded:
        for name in DEVKIT_COMMANDS:
            _devkit_missing(name, "not installed")


_register_commands()
_register_plugins()


def main() -> None:
    """Console-script entry point: maps ConfigError to exit 2 with a one-line message."""
    try:
        app(standalone_mode=True)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
