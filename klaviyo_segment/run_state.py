"""The final Prefect state of an event-flow run, and how callers read a run's summary from it.

Why: a run whose messages all failed (a key without ``events:write``, Klaviyo down) used to end ``Completed``, so
Prefect automations and notifications on failed runs never fired. The rule now:

- any permanently failed message (a dead letter) -> the run ends in a state of type FAILED whose message says how
  many failed ("3 of 3 messages failed — see dead letters"). Its name is ``Failed`` when nothing was delivered and
  ``PartlyFailed`` when some messages were sent, so the UI's run list shows which it was at a glance;
- no failed message (everything sent, or skipped on purpose) -> ``Completed``.

The summary dict stays the state's data either way, so a caller that runs the flow with ``return_state=True`` reads
it with :func:`summary_of` instead of catching the exception that calling a Failed flow raises. A run that crashed
(an exception, not failed messages) still raises from :func:`summary_of`.
"""

from __future__ import annotations

from typing import Any

#: State names of a run with dead letters (both of type FAILED).
FAILED = "Failed"
PARTLY_FAILED = "PartlyFailed"


def failure_message(summary: dict[str, Any]) -> str | None:
    """The state message of a run with failed messages, or None when it has none. Counts and flow only: no PII."""
    failed = int(summary.get("failed") or 0)
    if not failed:
        return None
    received = int(summary.get("received") or 0)
    return (
        f"{failed} of {received} messages failed — see dead letters (sent {summary.get('sent', 0)}, "
        f"skipped {summary.get('skipped', 0)})"
    )


def final_state(summary: dict[str, Any]) -> Any:
    """What a flow returns: the summary itself (Completed) or a FAILED state carrying it as data."""
    message = failure_message(summary)
    if message is None:
        return summary
    from prefect.states import Failed

    name = PARTLY_FAILED if summary.get("sent") else FAILED
    return Failed(name=name, message=message, data=summary)


def is_summary(value: Any) -> bool:
    return isinstance(value, dict) and "failed" in value and "received" in value


async def summary_of(state: Any) -> dict[str, Any]:
    """The run's summary from its final state; re-raises when the run crashed instead of reporting failures."""
    result = await state.aresult(raise_on_failure=False)
    if is_summary(result):
        return result  # type: ignore[no-any-return]
    if isinstance(result, BaseException):
        raise result
    await state.aresult()  # a failed state without a summary: Prefect's own exception (FailedRun, CrashedRun)
    raise RuntimeError(f"flow run ended {state.name!r} without a summary")


async def call_flow(flow: Any, /, **parameters: Any) -> tuple[dict[str, Any], Any]:
    """Run ``flow`` as a Prefect flow run and return (summary, final state), whether it Completed or Failed.
    ``flow`` is positional-only: replay-dead-letters has a parameter named ``flow``."""
    state = await flow(**parameters, return_state=True)
    return await summary_of(state), state


async def run_summary(flow: Any, /, **parameters: Any) -> dict[str, Any]:
    """:func:`call_flow` when only the summary matters (tests, benchmarks)."""
    summary, _state = await call_flow(flow, **parameters)
    return summary
