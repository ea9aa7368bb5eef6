"""`klaviyo-segment sandbox`: serve the Klaviyo and Segment emulators until SIGINT/SIGTERM."""

from __future__ import annotations

import json
import signal
import threading

import typer

from klaviyo_segment.errors import ConfigError

_FAULTS_HELP = (
    "Fault injection spec, e.g. 'bulk_create_events:503=0.1,reset=0.02;*:latency=50ms'. "
    "Grammar: OPS:EFFECT[,EFFECT] joined with ';'; OPS is a spec operationId, several joined with '|', "
    "or '*'; EFFECT is 500|502|503|429|reset|timeout|lost=P (probability) or latency=50ms|10-80ms. "
    "See klaviyo_segment.devkit.sandbox.klaviyo.faults.GRAMMAR_HELP."
)


def _check_flags(rate_limits: str, faults: str | None, port_klaviyo: int, port_segment: int) -> None:
    """Bad values are unusable invocations (exit 2), reported before anything listens."""
    from klaviyo_segment.devkit.sandbox.klaviyo.faults import parse_faults
    from klaviyo_segment.devkit.sandbox.klaviyo.ratelimit import parse_mode

    try:
        parse_mode(rate_limits)
    except ValueError as exc:
        raise ConfigError(f"--rate-limits: {exc}") from None
    if faults:
        try:
            parse_faults(faults)
        except ValueError as exc:
            raise ConfigError(f"--faults: {str(exc).splitlines()[0]}") from None
    for name, port in (("--port-klaviyo", port_klaviyo), ("--port-segment", port_segment)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name}: {port} is not a TCP port (0..65535)")


def register(app: typer.Typer) -> None:
    @app.command(
        "sandbox",
        help="Serve faithful Klaviyo and Segment emulators on 127.0.0.1 until stopped. "
        "Prints one JSON line with base URLs and credentials once both listen.",
    )
    def sandbox(
        port_klaviyo: int = typer.Option(0, "--port-klaviyo", help="Klaviyo emulator port (0 = a free port)."),
        port_segment: int = typer.Option(0, "--port-segment", help="Segment emulator port (0 = a free port)."),
        rate_limits: str = typer.Option(
            "on",
            "--rate-limits",
            help="off | on | scale=F (F multiplies every spec limit: 0.1 = ten times lower, 10 = ten times higher).",
        ),
        faults: str | None = typer.Option(None, "--faults", help=_FAULTS_HELP),
        strict_bulk: bool = typer.Option(
            False,
            "--strict-bulk",
            help="Bulk Create Events fails the whole request when a unique_id repeats an already stored event.",
        ),
        scopes: str | None = typer.Option(
            None,
            "--scopes",
            help="Comma-separated scopes of the printed API "
            "key (default: full access), e.g. profiles:read,profiles:write.",
        ),
        webhook_url: str | None = typer.Option(
            None, "--webhook-url", help="Where engagement system webhooks (POST /__sandbox/engagement) are delivered."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for credentials, ids and fault draws."),
        example_lists: bool = typer.Option(
            True,
            "--example-lists/--no-example-lists",
            help="Pre-create the lists examples/config.yaml refers to (VIPLST, LAPSED, ONBOAR, WINBAK).",
        ),
    ) -> None:
        from klaviyo_segment import devkit

        devkit.require("sandbox")
        from klaviyo_segment.devkit.sandbox.server import Sandbox, SandboxOptions

        _check_flags(rate_limits, faults, port_klaviyo, port_segment)
        scope_list = [s.strip() for s in scopes.split(",") if s.strip()] if scopes is not None else None
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook-url: {webhook_url!r} must be an http(s) URL")
        options = SandboxOptions(
            port_klaviyo=port_klaviyo,
            port_segment=port_segment,
            rate_limits=rate_limits,
            faults=faults,
            strict_bulk=strict_bulk,
            scopes=scope_list,
            webhook_url=webhook_url,
            seed=seed,
            example_lists=example_lists,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        with Sandbox(options) as box:
            typer.echo(json.dumps(box.info()), nl=True)
            stop.wait()
        raise typer.Exit(0)
