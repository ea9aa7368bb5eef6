"""The naive per-event client, written the way a user following Klaviyo's SDK README would: the official
``klaviyo-api`` SDK, one ``create_event`` per Segment message, the SDK's own retries (it honours 429 +
Retry-After with exponential backoff), one request at a time.

It is the baseline the delivery benchmark compares against: its ceiling is Create Event's 3,500/min (scaled),
against bulk create's 150 jobs x 1,000 events per minute.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class NaiveStats:
    sent: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


def event_body(message: dict[str, Any]) -> dict[str, Any]:
    """What a user writes by hand from the Create Event docs: event name, properties, email, unique id."""
    email = (message.get("context") or {}).get("traits", {}).get("email")
    profile = {"email": email} if email else {"external_id": message.get("userId")}
    return {
        "data": {
            "type": "event",
            "attributes": {
                "properties": message.get("properties") or {},
                "time": message.get("timestamp"),
                "unique_id": message.get("messageId"),
                "metric": {"data": {"type": "metric", "attributes": {"name": message.get("event")}}},
                "profile": {"data": {"type": "profile", "attributes": profile}},
            },
        }
    }


def run_naive(
    base_url: str,
    api_key: str,
    messages: list[dict[str, Any]],
    *,
    seconds: float,
    stop: threading.Event | None = None,
    max_retries: int = 5,
) -> NaiveStats:
    """Send until ``seconds`` pass, the messages run out or ``stop`` is set; each success counts once."""
    from klaviyo_api import KlaviyoAPI
    from openapi_client.exceptions import ApiException

    client = KlaviyoAPI(api_key, max_delay=60, max_retries=max_retries, test_host=base_url)
    stats = NaiveStats()
    started = time.monotonic()
    deadline = started + seconds
    for message in messages:
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            break
        try:
            client.Events.create_event(event_body(message))
            stats.sent += 1
        except ApiException as exc:
            stats.failed += 1
            stats.errors[str(exc.status)] = stats.errors.get(str(exc.status), 0) + 1
        except Exception as exc:  # noqa: BLE001 - a naive client just logs and moves on
            stats.failed += 1
            stats.errors[type(exc).__name__] = stats.errors.get(type(exc).__name__, 0) + 1
    stats.elapsed_s = time.monotonic() - started
    return stats
