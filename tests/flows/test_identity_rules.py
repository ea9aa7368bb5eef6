"""sync-identify identity rules (issue 14 B, issue 17.2), each from Segment messages through the real flow
against the sandbox: different userIds are different people, newest wins across runs, deletes are final
against anything older, stale cached profile ids are looked up again, per-message phone countries."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from klaviyo_segment.flows.sync_identify import sync_identify
from klaviyo_segment.run_state import run_summary  # a run with dead letters ends Failed

T = "2026-07-20T10:{:02d}:00Z"


def identify(
    mid: str,
    minute: int,
    user: str | None = None,
    anon: str | None = None,
    context: dict[str, Any] | None = None,
    **traits: Any,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "identify", "messageId": mid, "timestamp": T.format(minute), "traits": traits}
    if user:
        msg["userId"] = user
    if anon:
        msg["anonymousId"] = anon
    if context:
        msg["context"] = context
    return msg


# -- item 5: different userIds are never merged ------------------------------------------------------------


async def test_shared_phone_keeps_three_people_apart(flow_env: Any, by_id: Any) -> None:
    phone = "+14155550100"  # one company phone, three employees
    result = await run_summary(
        sync_identify,
        messages=[
            identify("e1", 1, "emp-1", email="one@corp.example", phone=phone, firstName="One"),
            identify("e2", 2, "emp-2", email="two@corp.example", phone=phone, firstName="Two"),
            identify("e3", 3, "emp-3", email="three@corp.example", phone=phone, firstName="Three"),
        ],
    )
    out = by_id(result)
    assert result["sent"] == 3 and len(flow_env.profiles()) == 3
    first = flow_env.profile(external_id="emp-1")
    assert first["attributes"]["phone_number"] == phone and first["attributes"]["email"] == "one@corp.example"
    for mid, user in (("e2", "emp-2"), ("e3", "emp-3")):
        profile = flow_env.profile(external_id=user)
        assert profile is not None and profile["attributes"].get("phone_number") is None
        assert any("phone_number" in w and "another person" in w for w in out[mid]["warnings"]), out[mid]
    assert flow_env.profile(external_id="emp-3")["attributes"]["first_name"] == "Three"


async def test_two_user_ids_claiming_one_email_fail_the_later(flow_env: Any, by_id: Any) -> None:
    result = await run_summary(
        sync_identify,
        messages=[
            identify("c2", 2, "claim-2", email="shared@example.com", plan="b"),
            identify("c1", 1, "claim-1", email="shared@example.com", plan="a"),
        ],
    )
    out = by_id(result)
    assert out["c1"]["status"] == "sent"
    assert out["c2"]["status"] == "failed" and out["c2"]["error"]["code"] == "identity_conflict"
    assert "claim-1" in out["c2"]["reason"] and "claim-2" in out["c2"]["reason"]
    owner = flow_env.profile(email="shared@example.com")
    assert owner["attributes"]["external_id"] == "claim-1" and owner["attributes"]["properties"]["plan"] == "a"
    # Across runs: Klaviyo's 409 on the phone of another person's profile leaves the phone off, with a warning.
    again = await run_summary(
        sync_identify, messages=[identify("c3", 5, "claim-3", email="c3@example.com", phone="+14155550111")]
    )
    assert again["sent"] == 1
    later = await run_summary(
        sync_identify, messages=[identify("c4", 6, "claim-4", email="c4@example.com", phone="+14155550111")]
    )
    assert later["sent"] == 1 and any("another person" in w for w in by_id(later)["c4"]["warnings"])
    assert flow_env.profile(external_id="claim-4")["attributes"].get("phone_number") is None
    assert flow_env.profile(external_id="claim-3")["attributes"]["phone_number"] == "+14155550111"


# -- item 6: newest wins across runs -----------------------------------------------------------------------


async def test_older_identify_never_overwrites_a_newer_one(flow_env: Any, by_id: Any) -> None:
    flow_env.configure(faults="create_or_update_profile:503=1.0")
    t1 = identify("t1", 1, "u-nw", email="nw@example.com", plan="free", color="red")
    first = await run_summary(sync_identify, messages=[t1])
    assert by_id(first)["t1"]["status"] == "failed"
    flow_env.configure(faults=None)
    second = await run_summary(sync_identify, messages=[identify("t2", 2, "u-nw", email="nw@example.com", plan="pro")])
    assert second["sent"] == 1
    retry = await run_summary(sync_identify, messages=[t1])  # Segment's retry of T1 (or a dead-letter replay)
    out = by_id(retry)["t1"]
    props = flow_env.profile(external_id="u-nw")["attributes"]["properties"]
    assert props["plan"] == "pro"  # not set back to free
    assert props["color"] == "red"  # the trait T2 did not carry still arrives
    assert out["status"] == "sent" and any("older than the applied version" in w for w in out["warnings"])
    only_old = await run_summary(sync_identify, messages=[identify("t0", 0, "u-nw", plan="trial")])
    assert by_id(only_old)["t0"] == by_id(only_old)["t0"] | {
        "status": "skipped",
        "reason": "skipped: older than the applied version",
    }
    assert flow_env.profile(external_id="u-nw")["attributes"]["properties"]["plan"] == "pro"


# -- item 17.2: a delete is final against anything older ---------------------------------------------------


async def test_rerun_of_an_older_batch_after_a_delete_does_not_recreate(flow_env: Any, by_id: Any) -> None:
    await run_summary(sync_identify, messages=[identify("b0", 1, "u-ts", email="ts@example.com", plan="free")])
    deleted = await run_summary(
        sync_identify, messages=[{"type": "delete", "messageId": "b2", "userId": "u-ts", "timestamp": T.format(10)}]
    )
    assert by_id(deleted)["b2"]["status"] == "sent" and flow_env.profile(external_id="u-ts") is None
    # B1 was leased by a worker that crashed; it is re-run after its lease expired, after B2.
    rerun = await run_summary(sync_identify, messages=[identify("b1", 5, "u-ts", email="ts@example.com", plan="pro")])
    assert by_id(rerun)["b1"] == by_id(rerun)["b1"] | {"status": "skipped", "reason": "older than a delete"}
    assert flow_env.profile(external_id="u-ts") is None and flow_env.profile(email="ts@example.com") is None
    # The tombstone holds no identifier in clear text.
    import sqlalchemy as sa

    async with flow_env.store() as store, store.engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM ks_tombstones"))).all()
    assert rows and all("u-ts" not in str(r) and "ts@example.com" not in str(r) for r in rows)
    # A newer identify is a new life for the person: it is sent.
    later = await run_summary(sync_identify, messages=[identify("b3", 20, "u-ts", email="ts@example.com")])
    assert later["sent"] == 1 and flow_env.profile(external_id="u-ts") is not None


async def test_tombstones_are_purged_after_their_retention(flow_env: Any) -> None:
    from datetime import datetime, timedelta

    from klaviyo_segment.store.people import TOMBSTONE_KEEP

    async with flow_env.store() as store:
        await store.put_tombstones({"external_id": "u-p"}, datetime(2026, 7, 20, tzinfo=UTC))
        now = datetime.now(UTC)
        assert TOMBSTONE_KEEP >= timedelta(hours=4)
        assert await store.purge_tombstones(now=now + TOMBSTONE_KEEP - timedelta(minutes=1)) == 0
        assert await store.deleted_at([{"external_id": "u-p"}]) != [None]
        assert await store.purge_tombstones(now=now + TOMBSTONE_KEEP + timedelta(minutes=1)) == 1
        assert await store.deleted_at([{"external_id": "u-p"}]) == [None]


# -- item 7: stale cached profile ids ----------------------------------------------------------------------


async def test_delete_after_a_merge_in_klaviyo_reaches_the_surviving_profile(flow_env: Any, by_id: Any) -> None:
    await run_summary(sync_identify, messages=[identify("s1", 1, "u-st", email="old@example.com")])
    stale = flow_env.profile(external_id="u-st")["id"]
    keep = flow_env.http.post(
        "/api/profile-import", json={"data": {"type": "profile", "attributes": {"email": "keep@example.com"}}}
    ).json()["data"]["id"]
    flow_env.http.post(
        "/api/profile-merge",
        json={
            "data": {
                "type": "profile-merge",
                "id": keep,
                "relationships": {"profiles": {"data": [{"type": "profile", "id": stale}]}},
            }
        },
    ).raise_for_status()
    assert flow_env.profile(external_id="u-st")["id"] == keep  # Klaviyo moved u-st onto the surviving profile
    result = await run_summary(
        sync_identify, messages=[{"type": "delete", "messageId": "s2", "userId": "u-st", "timestamp": T.format(5)}]
    )
    assert by_id(result)["s2"]["status"] == "sent"
    assert flow_env.profile(external_id="u-st") is None


# -- item 8: phone country per message ---------------------------------------------------------------------


async def test_phone_country_is_taken_per_message(flow_env: Any, by_id: Any) -> None:
    result = await run_summary(
        sync_identify,
        messages=[
            identify("p1", 1, "u-in", phone="8448309222", country_code="IN"),
            identify("p2", 1, "u-in2", phone="9876543210", address={"country": "India"}),
            identify("p3", 1, "u-uk", phone="020 7946 0018", context={"location": {"country": "United Kingdom"}}),
            identify("p4", 1, "u-us", phone="(415) 555-0132", context={"location": {"country": "USA"}}),
            identify("p5", 1, "u-bad", phone="415 555 0133", address={"country": "GB"}, email="bad@example.com"),
        ],
    )
    out = by_id(result)
    assert result["sent"] == 5
    assert flow_env.profile(external_id="u-in")["attributes"]["phone_number"] == "+918448309222"
    assert flow_env.profile(external_id="u-in2")["attributes"]["phone_number"] == "+919876543210"
    assert flow_env.profile(external_id="u-uk")["attributes"]["phone_number"] == "+442079460018"
    assert flow_env.profile(external_id="u-us")["attributes"]["phone_number"] == "+14155550132"
    bad = flow_env.profile(external_id="u-bad")["attributes"]
    assert bad.get("phone_number") is None  # invalid in GB: never re-read as a US number
    assert any("phone" in w and "GB" in w for w in out["p5"]["warnings"])


# -- item 9: merging the anonymous Klaviyo profile into the known one (opt-in) ------------------------------


async def test_alias_merges_the_anonymous_profile_only_when_configured(flow_env: Any, by_id: Any) -> None:
    await run_summary(
        sync_identify,
        messages=[
            identify("m1", 1, anon="anon-m", email="lead@example.com", plan="trial"),
            identify("m2", 2, "u-m", firstName="Mo"),
        ],
    )
    assert len(flow_env.profiles()) == 2
    alias = {"type": "alias", "messageId": "m3", "previousId": "anon-m", "userId": "u-m", "timestamp": T.format(3)}
    off = await run_summary(sync_identify, messages=[alias])
    assert by_id(off)["m3"]["reason"] == "alias recorded" and len(flow_env.profiles()) == 2
    on = await run_summary(
        sync_identify, messages=[alias | {"messageId": "m4"}], config={"identity": {"merge_anonymous": True}}
    )
    out = by_id(on)["m4"]
    assert out["status"] == "sent" and "merged" in out["reason"], out
    assert len(flow_env.profiles()) == 1
    merged = flow_env.profile(external_id="u-m")["attributes"]
    assert merged["email"] == "lead@example.com" and merged["first_name"] == "Mo"


async def test_identify_merges_an_anonymous_profile_but_never_another_person(flow_env: Any, by_id: Any) -> None:
    for attrs in (
        {"email": "anon@example.com"},
        {"external_id": "u-k"},
        {"email": "other@example.com", "external_id": "u-other"},
    ):
        flow_env.http.post(
            "/api/profile-import", json={"data": {"type": "profile", "attributes": attrs}}
        ).raise_for_status()
    config = {"identity": {"merge_anonymous": True}}
    result = await run_summary(
        sync_identify,
        messages=[
            identify("k1", 1, "u-k", email="anon@example.com"),
            identify("k2", 1, "u-k2", email="other@example.com"),
        ],
        config=config,
    )
    out = by_id(result)
    assert out["k1"]["status"] == "sent" and any("merged" in w for w in out["k1"]["warnings"]), out["k1"]
    assert flow_env.profile(external_id="u-k")["attributes"]["email"] == "anon@example.com"
    assert out["k2"]["status"] == "failed" and out["k2"]["error"]["code"] == "identity_conflict"
    assert flow_env.profile(external_id="u-other")["attributes"]["email"] == "other@example.com"
    assert len(flow_env.profiles()) == 2


async def test_in_one_batch_a_delete_sits_between_older_and_newer_identifies(flow_env: Any, by_id: Any) -> None:
    await run_summary(sync_identify, messages=[identify("o0", 1, "u-ob", email="ob@example.com")])
    result = await run_summary(
        sync_identify,
        messages=[
            identify("o3", 30, "u-ob", email="ob@example.com", plan="back"),  # the person comes back after the delete
            {"type": "delete", "messageId": "o2", "userId": "u-ob", "timestamp": T.format(20)},
            identify("o1", 10, "u-ob", plan="old"),
        ],
    )
    out = by_id(result)
    assert out["o2"]["status"] == "sent" and out["o1"]["reason"] == "older than a delete"
    assert out["o3"]["status"] == "sent"
    assert flow_env.profile(external_id="u-ob")["attributes"]["properties"] == {"plan": "back"}
