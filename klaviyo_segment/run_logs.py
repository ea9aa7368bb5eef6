"""Send this project's stdlib log records (``klaviyo_segment.*``) to the Prefect run they happen in.

Why: client retry warnings, pacing and degraded global limits are logged by library code that has no Prefect run
logger at hand; without this they reach the console of the worker process but never the flow run's logs in the
Prefect UI, where users look. Prefect's own answer, ``PREFECT_LOGGING_EXTRA_LOGGERS``, is read once when
``prefect`` is imported (too late to set it from our code) and warns for every record logged outside a run
(the receiver, the CLI). So the project attaches its own handler:

- it ships a record only while a flow or task run is active (otherwise it does nothing: the console still
  shows the record through the root logger);
- it masks PII on the record itself (:mod:`klaviyo_segment.redact`) before anything is shipped, whatever
  child logger produced it, because a logger's own filters do not apply to records propagated from children.

:func:`route_to_prefect` is idempotent; ``klaviyo_segment.runtime`` calls it at import, so every flow and task
process (CLI run, ``serve``, deployments' workers) routes its records.
"""

from __future__ import annotations

import logging

from klaviyo_segment.redact import RedactingFilter

PROJECT_LOGGER = "klaviyo_segment"


def _in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _handler_class() -> type[logging.Handler]:
    from prefect.logging.handlers import APILogHandler

    class RunLogHandler(APILogHandler):
        """Prefect's API log handler, silent outside a run instead of warning about it."""

        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "flow_run_id", None) is None and not _in_run():
                return
            super().emit(record)

    return RunLogHandler


def route_to_prefect(name: str = PROJECT_LOGGER) -> logging.Handler:
    """Attach (once) the run-log handler to ``name``; returns the handler in place.

    An API log handler that Prefect attached itself (``PREFECT_LOGGING_EXTRA_LOGGERS=klaviyo_segment``) is
    replaced, so a record is shipped once and always redacted.
    """
    from prefect.logging.handlers import APILogHandler

    target = logging.getLogger(name)
    for handler in list(target.handlers):
        if getattr(handler, "_klaviyo_segment_run_logs", False):
            return handler
        if isinstance(handler, APILogHandler):
            target.removeHandler(handler)
    handler = _handler_class()()
    handler._klaviyo_segment_run_logs = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    target.addHandler(handler)
    return handler
