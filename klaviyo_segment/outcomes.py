"""Per-message outcomes: what every flow returns, puts in its artifact and counts for the CLI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from klaviyo_segment.errors import ApiError


class Status(StrEnum):
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"


class Outcome(BaseModel):
    """The fate of one input message. ``failed`` ones become dead letters."""

    message_id: str
    status: Status
    type: str | None = None
    reason: str | None = None
    error: ApiError | None = None
    warnings: list[str] = Field(default_factory=list)


class ItemResult(BaseModel):
    """The result of one item of a batched API task, aligned with the task's input by ``index``."""

    index: int
    ok: bool
    value: Any = None
    error: ApiError | None = None


def summarize(flow: str, outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """The contract's JSON summary: received/sent/skipped/failed plus reason counts."""
    items = list(outcomes)
    counts = Counter(o.status for o in items)
    reasons = Counter(f"{o.status}:{o.reason}" for o in items if o.reason and o.status != Status.SENT)
    return {
        "flow": flow,
        "received": len(items),
        "sent": counts[Status.SENT],
        "skipped": counts[Status.SKIPPED],
        "failed": counts[Status.FAILED],
        "reasons": dict(sorted(reasons.items())),
    }
