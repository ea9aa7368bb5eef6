"""serve's JSON log lines keep the exception (issue 17, item 9): "dispatch of sync-identify failed; will retry on
the next sweep" reached the output without saying why."""

from __future__ import annotations

import json
import logging

from klaviyo_segment import redact
from klaviyo_segment.cli.commands.serve import _JsonFormatter


def _format(record: logging.LogRecord) -> dict[str, str]:
    redact.RedactingFilter().filter(record)
    return json.loads(_JsonFormatter().format(record))


def test_exception_and_its_traceback_are_in_the_json_line() -> None:
    try:
        raise RuntimeError("store unreachable for someone@example.com")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "klaviyo_segment.ingress.dispatcher",
            logging.ERROR,
            __file__,
            1,
            "dispatch of %s failed; will retry on the next sweep",
            ("sync-identify",),
            sys.exc_info(),
        )
    line = _format(record)
    assert line["msg"] == "dispatch of sync-identify failed; will retry on the next sweep"
    assert line["error"] == "RuntimeError: store unreachable for s***@example.com"  # redacted like the message
    assert "Traceback" in line["exc"] and "someone@" not in line["exc"]


def test_lines_without_an_exception_have_no_error_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "ready", (), None)
    assert set(_format(record)) == {"ts", "level", "logger", "msg"}
