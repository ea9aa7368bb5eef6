"""Poison messages that bypass the receiver's door (inline ``messages``, ``run --input``, batches stored before the
door existed): one message that makes processing raise must become a dead letter on its own, never block the
valid messages around it, and a batch that keeps failing is capped (issue 17, item 1). SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from klaviyo_segment.flows.forward_track import forward_track
from klaviyo_segment.flows.sync_identify import sync_identify
from klaviyo_segment.run_state import run_summary  # a run with dead letters ends Failed
from klaviyo_segment.segment_spec import message_key


def _track(mid: str, event: str = "Product Viewed", **properties: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": mid, "userId": f"user-{mid}", "event": event, "properties": properties}


def _valid(n: int) -> list[dict[str, Any]]:
    return [_track(f"ok-{i}", product_id=f"p{i}") for i in range(n)]


@pytest.fixture
def poison_env(flow_env: Any, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The flow sandbox on this test's store backend (SQLite file or a fresh PostgreSQL database)."""
    monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", store_url)
    flow_env.store_url = store_url
    return flow_env


def test_run_input_with_surrogates_and_nul_runs_and_dead_letters_only_the_bad_one(
    poison_env: Any, tmp_path: Path
) -> None:
    """``run --input``: a lone surrogate in a property or an event name is repaired (U+FFFD, the door's rule), a
    NUL in a userId fails that one message with its reason; the run itself happens (it used to crash)."""
    from klaviyo_segment.cli.app import app

    messages = _valid(3) + [
        _track("bad-prop", product_id="p\ud800x"),
        _track("bad-name", event="Viewed \udc00"),
        {**_track("nul-user"), "userId": "evil\x00"},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in messages), encoding="utf-8")
    result = CliRunner().invoke(app, ["run", "forward-track", "--input", str(path), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["sent"], summary["failed"]) == (5, 1), summary
    assert poison_env.summary()["events_by_metric"] == {"Viewed Product": 4, "Viewed \ufffd": 1}
    assert any(e["properties"].get("product_id") == "p\ufffdx" for e in poison_env.events("Viewed Product"))
    letters = asyncio.run(_dead_letters(poison_env))
    assert list(letters) == ["nul-user"]
    assert "NUL" in letters["nul-user"].reason


async def _dead_letters(env: Any) -> dict[str, Any]:
    async with env.store() as store:
        return {d.message_id: d for d in await store.list_dead_letters()}


async def test_stored_batches_with_poison_complete_and_valid_ones_are_sent(poison_env: Any) -> None:
    """Batches written straight to the store (as before the door validated) with a surrogate among them."""
    async with poison_env.store() as store:
        ids = []
        for chunk in (_valid(2), [_track("bad", product_id="\ud800")], _valid(4)[2:]):
            accepted = await store.accept(chunk, key=lambda m: m["messageId"], route=lambda m: ["forward-track"])
            ids.append(accepted.batches["forward-track"])
    result = await run_summary(forward_track, batch_ids=ids)
    assert (result["sent"], result["failed"]) == (4, 1), result
    async with poison_env.store() as store:
        infos = await store.get_batches(ids)
        assert {i.status for i in infos} <= {"done", "partial"}, infos  # all closed: nothing re-runs
        assert [d.message_id for d in await store.list_dead_letters()] == ["bad"]


async def test_nul_in_user_id_does_not_block_the_identify_batch(poison_env: Any) -> None:
    """PostgreSQL text cannot hold U+0000: inserting the identity cache raised for the whole run."""
    messages = [
        {"type": "identify", "messageId": f"id-{i}", "userId": f"u{i}", "traits": {"email": f"u{i}@example.com"}}
        for i in range(3)
    ]
    messages.insert(
        1, {"type": "identify", "messageId": "nul", "userId": "evil\x00id", "traits": {"email": "nul@example.com"}}
    )
    result = await run_summary(sync_identify, messages=messages)
    outcomes = {o["message_id"]: o for o in result["outcomes"]}
    assert all(outcomes[f"id-{i}"]["status"] == "sent" for i in range(3)), outcomes
    assert outcomes["nul"]["status"] in ("sent", "failed"), outcomes["nul"]  # SQLite holds NUL; PostgreSQL not
    async with poison_env.store() as store:
        letters = [d.message_id for d in await store.list_dead_letters()]
    assert letters == ([] if outcomes["nul"]["status"] == "sent" else ["nul"])
    assert message_key(messages[1], 1) == "nul"


def _items(keys: list[str]) -> list[Any]:
    from klaviyo_segment.runtime import Item

    return [Item(i, k, {"messageId": k}) for i, k in enumerate(keys)]


async def test_isolation_fails_only_poison_and_raises_systemic_errors() -> None:
    from types import SimpleNamespace

    from klaviyo_segment.isolation import process_isolated
    from klaviyo_segment.outcomes import Status
    from klaviyo_segment.runtime import outcome

    calls: list[int] = []

    async def poisoned(env: Any, items: list[Any], outcomes: dict[str, Any]) -> None:
        calls.append(len(items))
        if any(i.key.startswith("bad") for i in items):
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        for item in items:
            outcomes[item.key] = outcome(item, Status.SENT)

    env = SimpleNamespace(flow="forward-track")
    outcomes: dict[str, Any] = {}
    keys = [f"ok{i}" for i in range(30)] + ["bad1"] + [f"ok{i}" for i in range(30, 60)] + ["bad2"]
    await process_isolated(env, _items(keys), outcomes, poisoned)  # type: ignore[arg-type]
    assert {k for k, o in outcomes.items() if o.status == Status.FAILED} == {"bad1", "bad2"}
    assert sum(o.status == Status.SENT for o in outcomes.values()) == 60
    assert "UnicodeEncodeError" in (outcomes["bad1"].reason or "")
    assert len(calls) < 30  # a bisection, not one run per message

    async def outage(env: Any, items: list[Any], outcomes: dict[str, Any]) -> None:
        raise ConnectionError("store down")

    with pytest.raises(ConnectionError):  # nothing dead-lettered during an outage: the batch is retried
        await process_isolated(env, _items(["a", "b", "c"]), {}, outage)  # type: ignore[arg-type]
    alone: dict[str, Any] = {}
    await process_isolated(env, _items(["bad-alone"]), alone, poisoned)  # type: ignore[arg-type]
    assert alone["bad-alone"].status == Status.FAILED  # content errors are poison even alone in a run


async def test_a_store_error_leaves_the_flow_without_an_email(
    poison_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17, item 7: the SQL parameters of a failing write (emails) reached the flow-run state message, a
    Prefect log row and stderr."""
    import sqlalchemy as sa
    from prefect.client.orchestration import get_client

    async with poison_env.store() as store, store._engine.begin() as conn:  # identity-cache writes now fail
        await conn.execute(sa.text("DROP TABLE ks_profile_ids"))
        await conn.execute(
            sa.text(
                "CREATE TABLE ks_profile_ids (key TEXT PRIMARY KEY, profile_id TEXT NOT NULL "
                "CHECK (length(profile_id) < 3), updated_us BIGINT NOT NULL)"
            )
        )
    messages = [
        {
            "type": "identify",
            "messageId": f"leak-{i}",
            "userId": f"leak-{i}",
            "traits": {"email": f"private.person{i}@example.com"},
        }
        for i in range(2)
    ]
    state = await sync_identify(messages=messages, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception) as caught:
        await state.result()
    shown = f"{caught.value!r} {caught.value} {state.message}"
    assert "private.person" not in shown and "private.person" not in caplog.text, shown
    async with get_client() as client:
        runs = await client.read_flow_runs()
        logs = await client.read_logs()
    assert all("private.person" not in (r.state.message or "") for r in runs if r.state)
    assert all("private.person" not in log.message for log in logs)
