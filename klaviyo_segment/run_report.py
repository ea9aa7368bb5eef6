"""What a flow run tells the Prefect UI about itself: its name, one summary line, one line per dead letter.

Why: six of the eight flows wrote no log line of their own, runs had random names ("dashing-okapi") and a run's
failures were visible only in its artifact. Everything here goes through Prefect's run logger, so it lands in the
flow run's Logs tab; text is redacted (:mod:`klaviyo_segment.redact`) because reasons can quote a value (an invalid
email). Run names are built from parameters without reading message content: counts and batch ids only.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.redact import redact

logger = logging.getLogger("klaviyo_segment.run_report")

#: How many distinct reasons the summary line names (the artifact has all of them).
TOP_REASONS = 3
#: Dead letters logged one line each per run; the rest are counted in one line (a 5000-message outage must not
#: write 5000 log lines to the Prefect API).
MAX_DEAD_LETTER_LINES = 50


def run_name(
    flow: str, messages: Sequence[Any] | None, batch_ids: Sequence[str] | None, message_count: int | None = None
) -> str:
    """``forward-track · 5000 msgs · batch 3f2a91…``: flow, message count and first batch id, never content."""
    parts = [flow]
    count = message_count if message_count is not None else None if messages is None else len(messages)
    if count is not None:
        parts.append(f"{count} msg" if count == 1 else f"{count} msgs")
    if batch_ids:
        if message_count is None:
            parts.append(f"{len(batch_ids)} batches")
        more = f" +{len(batch_ids) - 1}" if len(batch_ids) > 1 else ""
        parts.append(f"batch {str(batch_ids[0])[:6]}…{more}")
    return " · ".join(parts)


def flow_run_name() -> str:
    """``@flow(flow_run_name=flow_run_name)``: Prefect evaluates it when the run starts, from its parameters.

    Batch runs do not know their message count yet (the batches are in the store); :func:`rename_run` adds it once
    the batches are loaded."""
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    messages, batch_ids = params.get("messages"), params.get("batch_ids")
    name = run_name(
        str(flow_run.flow_name),
        messages if isinstance(messages, list) else None,
        batch_ids if isinstance(batch_ids, list) else None,
    )
    if params.get("poll"):
        name += " · poll"
    return name


def _run_context() -> Any:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx if ctx is not None and ctx.flow_run is not None else None


def attempt() -> int:
    """The flow run's attempt (1 on the first run, 2 after a Retry from the UI or the API)."""
    ctx = _run_context()
    return max(1, int(getattr(ctx.flow_run, "run_count", 1) or 1)) if ctx else 1


async def rename_run(flow: str, batch_ids: Sequence[str], message_count: int) -> None:
    """Give a batch run its message count (the start-time name only had batch ids). Never fails the run."""
    ctx = _run_context()
    if ctx is None or not batch_ids:
        return
    try:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            await client.update_flow_run(ctx.flow_run.id, name=run_name(flow, None, batch_ids, message_count))
    except Exception as exc:  # noqa: BLE001 - a cosmetic name must never fail a run that delivered its messages
        logger.debug("could not rename the flow run: %s", exc)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a run (the UI's Logs tab), this module's logger outside one (tests, preview)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logger


def summary_line(summary: dict[str, Any]) -> str:
    """``forward-track: received 3, sent 0, skipped 0, failed 3; top reasons: failed: 403 ... (3)``."""
    line = (
        f"{summary['flow']}: received {summary['received']}, sent {summary['sent']}, "
        f"skipped {summary['skipped']}, failed {summary['failed']}"
    )
    reasons = Counter(summary.get("reasons") or {}).most_common(TOP_REASONS)
    if reasons:
        line += "; top reasons: " + "; ".join(f"{reason} ({n})" for reason, n in reasons)
    return redact(line)


def dead_letter_line(flow: str, dead_letter_id: str, out: Outcome) -> str:
    status = f" (HTTP {out.error.status})" if out.error is not None and out.error.status else ""
    return redact(
        f"dead letter {dead_letter_id}: {flow} message {out.message_id} ({out.type or 'unknown'}) "
        f"failed{status}: {out.reason or 'failed'}"
    )


def log_run(flow: str, summary: dict[str, Any], failed: Sequence[tuple[str, Outcome]]) -> None:
    """The run's summary line, then one line per dead letter (capped), all through the run logger."""
    log = _run_logger()
    log.log(logging.WARNING if summary.get("failed") else logging.INFO, "%s", summary_line(summary))
    for dl_id, out in failed[:MAX_DEAD_LETTER_LINES]:
        log.warning("%s", dead_letter_line(flow, dl_id, out))
    if len(failed) > MAX_DEAD_LETTER_LINES:
        log.warning(
            "... and %d more dead letters (`klaviyo-segment dead-letters list --flow %s`)",
            len(failed) - MAX_DEAD_LETTER_LINES,
            flow,
        )


def log_resolved(flow: str, count: int) -> None:
    _run_logger().info("%s: %d dead letters resolved (their messages were delivered)", flow, count)


def failed_outcomes(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status == Status.FAILED]
