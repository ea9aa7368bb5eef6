"""sync-identify against the real sandbox, as real Prefect flow runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from klaviyo_segment.flows.sync_identify import sync_identify
from klaviyo_segment.run_state import run_summary  # a run with dead letters ends Failed

T = "2026-07-20T10:{:02d}:00Z"


def identify(mid: str, minute: int, user: str | None = None, anon: str | None = None, **traits: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "identify", "messageId": mid, "timestamp": T.format(minute), "traits": traits}
    if user:
        msg["userId"] = user
    if anon:
        msg["anonymousId"] = anon
    return msg


async def test_batch_collapses_people_and_handles_every_type(flow_env: Any, by_id: Any) -> None:
    messages = [
        identify("m2", 5, "u1", plan="enterprise", title="Analyst"),  # later: wins although listed first
        identify("m1", 1, "u1", "a1", email="Ada@Example.com", plan="pro", firstName="Ada"),
        identify("m3", 2, "u2", email="grace@example.com", phone="not a phone"),
        {"type": "identify", "messageId": "bad", "traits": {"email": "x@example.com"}},  # no userId/anonymousId
        identify("m4", 3, "u3", email="optout@example.com") | {"integrations": {"Klaviyo": False}},
        {"type": "alias", "messageId": "al", "previousId": "a9", "userId": "u2"},
        {"type": "group", "messageId": "gr", "userId": "u1", "groupId": "g1"},
        {"type": "track", "messageId": "tr", "userId": "u1", "event": "Clicked"},
    ]
    result = await run_summary(sync_identify, messages=messages)
    out = by_id(result)
    assert (result["received"], result["sent"], result["skipped"], result["failed"]) == (8, 3, 4, 1)
    assert out["bad"]["reason"].startswith("invalid message")
    assert out["m4"]["reason"] == "opted out (integrations)"
    assert out["al"]["reason"] == "alias recorded" and out["gr"]["reason"] == "group calls are not synced"
    assert out["tr"]["reason"] == "not for this flow"
    assert any("phone" in w for w in out["m3"]["warnings"])
    ada = flow_env.profile(external_id="u1")
    assert ada["attributes"]["email"] == "ada@example.com" and ada["attributes"]["first_name"] == "Ada"
    assert ada["attributes"]["properties"]["plan"] == "enterprise"  # timestamp order, not input order
    assert ada["attributes"]["title"] == "Analyst"
    assert len(flow_env.profiles()) == 2
    assert flow_env.stats()["requests"]["create_or_update_profile"] == 2  # one per person
    async with flow_env.store() as store:
        assert await store.get_profile_ids(["external_id:u1", "email:ada@example.com"]) == {
            "external_id:u1": ada["id"],
            "email:ada@example.com": ada["id"],
        }
        aliases = await store.get_aliases(["a1", "a9"])
    assert aliases["a9"]["user_id"] == "u2" and aliases["a1"]["email"] == "ada@example.com"
    assert aliases["a1"]["user_id"] == "u1"

    again = await run_summary(sync_identify, messages=messages)
    assert again["sent"] == 0 and by_id(again)["m1"]["reason"] == "duplicate of an already delivered messageId"
    assert len(flow_env.profiles()) == 2


async def test_anonymous_traits_are_remembered_and_merged_older_under_newer(flow_env: Any, by_id: Any) -> None:
    first = await sync_identify(messages=[identify("a-1", 1, anon="anon-7", color="teal", plan="free")])
    assert by_id(first)["a-1"]["reason"] == "no Klaviyo identifier" and flow_env.profiles() == []
    second = await sync_identify(messages=[identify("a-2", 2, anon="anon-7", email="alan@example.com", plan="pro")])
    assert second["sent"] == 1
    alan = flow_env.profile(email="alan@example.com")
    assert alan["attributes"]["properties"] == {"color": "teal", "plan": "pro"}
    # The alias is now known: an anonymous-only identify reaches the same profile.
    third = await sync_identify(messages=[identify("a-3", 3, anon="anon-7", city_note="Bletchley")])
    assert third["sent"] == 1 and len(flow_env.profiles()) == 1
    assert flow_env.profile(email="alan@example.com")["attributes"]["properties"]["city_note"] == "Bletchley"


async def test_identifier_conflict_is_reported_not_duplicated(flow_env: Any, by_id: Any) -> None:
    for attrs in ({"email": "owner@example.com"}, {"external_id": "u-conf"}):
        flow_env.http.post(
            "/api/profile-import", json={"data": {"type": "profile", "attributes": attrs}}
        ).raise_for_status()
    result = await run_summary(sync_identify, messages=[identify("c1", 1, "u-conf", email="owner@example.com")])
    outcome = by_id(result)["c1"]
    assert outcome["status"] == "failed" and outcome["reason"].startswith("identifier conflict")
    assert len(flow_env.profiles()) == 2  # never a third profile
    async with flow_env.store() as store:
        assert [d.message_id for d in await store.list_dead_letters()] == ["c1"]


async def test_large_batch_uses_one_bulk_import_job(flow_env: Any, by_id: Any) -> None:
    messages = [identify(f"b{i}", 1, f"ub{i}", email=f"bulk{i}@example.com") for i in range(120)]
    messages.append(identify("b-bad", 1, "ub-bad", email="not-an-email"))
    result = await run_summary(sync_identify, messages=messages)
    assert result["sent"] == 120 and result["failed"] == 1
    assert by_id(result)["b-bad"]["status"] == "failed"
    summary = flow_env.summary()
    assert summary["profiles"] == 120 and len(summary["import_jobs"]) == 1
    assert "create_or_update_profile" not in flow_env.stats()["requests"]


async def test_delete_erases_profile_and_local_traces(flow_env: Any, by_id: Any) -> None:
    await sync_identify(messages=[identify("d0", 1, "u-del", "anon-del", email="gone@example.com")])
    assert flow_env.profile(email="gone@example.com") is not None
    result = await sync_identify(
        messages=[
            {"type": "delete", "messageId": "d1", "userId": "u-del"},
            {"type": "delete", "messageId": "d2", "userId": "u-never-seen"},
        ]
    )
    out = by_id(result)
    assert out["d1"]["status"] == "sent"
    assert out["d2"] == out["d2"] | {"status": "skipped", "reason": "no Klaviyo profile found; local traces purged"}
    assert flow_env.profile(email="gone@example.com") is None and flow_env.summary()["deleted_profiles"] == 1
    async with flow_env.store() as store:
        assert await store.get_aliases(["anon-del"]) == {}
        assert await store.get_profile_ids(["external_id:u-del", "email:gone@example.com"]) == {}


async def test_transient_faults_fail_then_redelivery_sends(flow_env: Any, by_id: Any) -> None:
    flow_env.configure(faults="create_or_update_profile:503=1.0")
    messages = [identify("f1", 1, "u-f1", email="f1@example.com"), identify("f2", 1, "u-f2", email="f2@example.com")]
    result = await run_summary(sync_identify, messages=messages)
    assert result["failed"] == 2 and by_id(result)["f1"]["error"]["status"] == 503
    assert "profile upsert failed" in by_id(result)["f1"]["reason"]
    flow_env.configure(faults=None)
    retry = await run_summary(sync_identify, messages=messages)
    assert retry["sent"] == 2 and len(flow_env.profiles()) == 2


@pytest.fixture
def two_messages(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(m)
            for m in [
                identify("p1", 1, "u-p1", email="P1@example.com", firstName="Pat"),
                {"type": "delete", "messageId": "p2", "userId": "u-p2"},
            ]
        )
        + "\n"
    )
    return path


def test_cli_preview_prints_contract_lines(flow_env: Any, two_messages: Path) -> None:
    from klaviyo_segment.cli.app import app

    result = CliRunner().invoke(app, ["preview", "sync-identify", "--input", str(two_messages)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines == [
        {"method": "GET", "path": "/api/profiles?filter=any%28external_id%2C%5B%22u-p2%22%5D%29&page%5Bsize%5D=100"},
        {
            "method": "POST",
            "path": "/api/data-privacy-deletion-jobs",
            "body": {
                "data": {
                    "type": "data-privacy-deletion-job",
                    "attributes": {
                        "profile": {"data": {"type": "profile", "attributes": {}, "id": "{profile:external_id=u-p2}"}}
                    },
                }
            },
        },
        # Who holds this email already? Another userId's profile must never be updated (issue 14 item 5).
        {
            "method": "GET",
            "path": "/api/profiles?filter=any%28email%2C%5B%22p1%40example.com%22%5D%29&page%5Bsize%5D=100",
        },
        {
            "method": "POST",
            "path": "/api/profile-import",
            "body": {
                "data": {
                    "type": "profile",
                    "attributes": {"email": "p1@example.com", "external_id": "u-p1", "first_name": "Pat"},
                }
            },
        },
    ]
    assert flow_env.profiles() == []  # preview sends nothing


def test_cli_run_json_summary(flow_env: Any, two_messages: Path) -> None:
    from klaviyo_segment.cli.app import app

    result = CliRunner().invoke(app, ["run", "sync-identify", "--input", str(two_messages), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary | {"reasons": None} == {
        "flow": "sync-identify",
        "received": 2,
        "sent": 1,
        "skipped": 1,
        "failed": 0,
        "reasons": None,
    }
    assert flow_env.profile(external_id="u-p1")["attributes"]["first_name"] == "Pat"
