"""A transient Klaviyo error that outlives the client's retries must not dead-letter a valid message of a leased
batch: the batch is retried after a backoff and the message delivered then (issue 17, the stray chaos dead letter).

Root cause found by the chaos run: under its injected faults (19 % of requests answer 5xx/429 or drop the
connection), one request in about 21,000 fails all 6 client attempts; the flow then dead-lettered the valid
message behind it, although a later attempt would have succeeded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from klaviyo_segment.constants import ENV_LEASE_SECONDS
from klaviyo_segment.errors import ApiError, RetryLater, is_transient
from klaviyo_segment.flows.churn_winback import churn_winback
from klaviyo_segment.run_state import run_summary


def _score(mid: str, user: str, value: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": mid,
        "userId": user,
        "timestamp": "2026-07-01T00:00:00Z",
        "traits": {"churn_risk_score": value, "email": f"{user}@example.com"},
    }


def test_transient_errors_are_told_apart_from_permanent_ones() -> None:
    assert is_transient(ApiError(status=503)) and is_transient(ApiError(status=429))
    assert is_transient(ApiError(status=None, meta={"retryable": True}))  # a network failure after retries
    assert not is_transient(ApiError(status=400)) and not is_transient(ApiError(status=404))
    assert not is_transient(ApiError(code="invalid_input")) and not is_transient(None)


async def test_transient_failure_retries_the_batch_instead_of_dead_lettering(
    flow_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_LEASE_SECONDS, "2")  # a failed run's batch is retaken after min(backoff, lease)
    created = flow_env.http.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "Win-back"}}})
    list_id = created.raise_for_status().json()["data"]["id"]
    config = {"churn": {"list_id": list_id, "threshold": 0.7}}
    async with flow_env.store() as store:
        accepted = await store.accept(
            [_score("valid", "u", 0.9), _score("bad", "v", "high")],
            key=lambda m: m["messageId"],
            route=lambda m: ["churn-winback"],
        )
    batch = accepted.batches["churn-winback"]

    # Every profile write answers 503: the client gives up after its 6 attempts (the chaos run's rare case).
    flow_env.configure(faults="create_or_update_profile:503=1.0")
    with pytest.raises(RetryLater, match="failed transiently"):
        await run_summary(churn_winback, batch_ids=[batch], config=config)
    async with flow_env.store() as store:
        letters = {d.message_id: d for d in await store.list_dead_letters()}
        assert set(letters) == {"bad"}, letters  # the invalid message at once; the valid one is not a dead letter
        assert "must be a number" in (letters["bad"].reason or "")
        (info,) = await store.get_batches([batch])
        assert info.status == "leased", info  # still open: retried after the backoff

    flow_env.configure(faults=None)
    await asyncio.sleep(2.2)
    summary = await run_summary(churn_winback, batch_ids=[batch], config=config)
    assert summary["sent"] == 1, summary
    async with flow_env.store() as store:
        assert [d.message_id for d in await store.list_dead_letters()] == ["bad"]
        (info,) = await store.get_batches([batch])
        assert info.status == "partial", info
    profile = flow_env.profile(email="u@example.com")
    assert profile is not None and profile["attributes"]["properties"]["churn_risk"] is True
    lists = {k["id"]: k for k in flow_env.http.get("/__sandbox/lists").json()}
    assert lists[list_id]["members"] == [profile["id"]]


async def test_attempt_cap_dead_letters_only_what_was_not_delivered(flow_env: Any) -> None:
    """A transient failure that persists ends at the attempt cap: its messages become dead letters with the
    error, but a message an earlier attempt delivered does not."""
    async with flow_env.store() as store:
        store.max_attempts = 1
        accepted = await store.accept(
            [_score("sent-before", "a", 0.1), _score("never", "b", 0.9)],
            key=lambda m: m["messageId"],
            route=lambda m: ["churn-winback"],
        )
        batch = accepted.batches["churn-winback"]
        (leased,) = await store.claim("worker", 60, 10, flow="churn-winback")
        await store.claim_once(["delivered:churn-winback:sent-before"])
        await store.record_failure(leased.id, "worker", "1 message(s) failed transiently: 503")
        await store.renew(batch, "worker", 0)
        await asyncio.sleep(0.01)
        assert await store.claim("worker-2", 60, 10, flow="churn-winback") == []  # capped: given up
        letters = await store.list_dead_letters()
    assert [d.message_id for d in letters] == ["never"]
    assert "gave up after 1 attempts: 1 message(s) failed transiently: 503" in (letters[0].reason or "")
