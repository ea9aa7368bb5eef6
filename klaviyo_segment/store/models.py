"""Plain values returned by the store: flows pass them around, so they carry no database handles."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

BatchStatus = Literal["pending", "leased", "done", "partial"]


@dataclass(frozen=True)
class AcceptResult:
    batches: dict[str, str]  # flow -> batch id
    accepted: int
    duplicates: int


@dataclass(frozen=True)
class BatchInfo:
    """A batch without its messages: enough for a sweeper or a dashboard."""

    id: str
    flow: str
    status: BatchStatus
    attempts: int
    size: int
    created_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    dispatched_run_id: str | None = None


@dataclass(frozen=True)
class Batch:
    id: str
    flow: str
    status: BatchStatus
    attempts: int
    messages: list[dict[str, Any]]
    created_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    #: The stored key of each message (None when it had none), aligned with ``messages``.
    message_ids: list[str | None] = field(default_factory=list)
    #: Raw summary column: while open, the last recorded failure (``{"last_error": ...}``).
    summary_text: str | None = None


@dataclass(frozen=True)
class DeadLetterIn:
    flow: str
    message: dict[str, Any]
    message_id: str | None
    reason: str
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: str
    message_id: str | None
    flow: str
    reason: str
    error: dict[str, Any] | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    message: dict[str, Any] = field(default_factory=dict)
