"""``klaviyo-segment serve [--config FILE] [--host 127.0.0.1] [--port 8787] [--dispatch inline|deployments]``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, so log shippers need no parsing rules (the message is already redacted)."""

    def format(self, record: logging.LogRecord) -> str:
        """``error`` (type: message) and ``exc`` (the traceback) when the record carries an exception: without
        them "dispatch ... failed; will retry" never said why. Both are redacted like the message."""
        from klaviyo_segment.redact import redact

        line = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = redact(f"{type(exc).__name__}: {exc}")
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        config: Path | None = typer.Option(None, "--config", "-c", help="Config YAML (also saved as blocks)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Receiver address."),
        port: int = typer.Option(8787, "--port", help="Receiver port (0 = a free port)."),
        dispatch: str = typer.Option(
            "inline",
            "--dispatch",
            help="inline: run flows in this process (lowest latency); deployments: "
            "start deployment runs for workers (served here too).",
        ),
    ) -> None:
        """Receiver (POST /segment, POST /klaviyo, GET /healthz) + dispatcher + Prefect, in one process.

        Prints one JSON line when ready: {"receiver": URL, "prefect_ui": URL}. Stops on SIGINT/SIGTERM; batches
        not finished stay in the state store and are dispatched on the next start.
        """
        import asyncio

        from klaviyo_segment import redact
        from klaviyo_segment.ingress.serve import print_ready
        from klaviyo_segment.ingress.serve import serve as run_serve

        handler = logging.StreamHandler()
        handler.setFormatter(_JsonFormatter())
        handler.addFilter(redact.RedactingFilter())
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        logging.getLogger("httpx").setLevel(logging.WARNING)
        raise typer.Exit(
            asyncio.run(run_serve(config_path=config, host=host, port=port, dispatch=dispatch, ready=print_ready))
        )
