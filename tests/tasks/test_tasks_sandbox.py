"""Batched Klaviyo tasks against the Klaviyo emulator over real HTTP: per-item results, chunking, partial
failures, and what the account holds afterwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from prefect.logging import disable_run_logger

from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.services import lists as lists_service
from klaviyo_segment.tasks import klaviyo_events as ev
from klaviyo_segment.tasks import klaviyo_lists as li
from klaviyo_segment.tasks import klaviyo_metrics as me
from klaviyo_segment.tasks import klaviyo_privacy as pr
from klaviyo_segment.tasks import klaviyo_profiles as pf
from klaviyo_segment.tasks import klaviyo_subscriptions as su
from tests.tasks.conftest import create_list, create_profile, requests_to, sandbox_profiles


async def test_upsert_profiles_per_item(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    old = create_profile(klaviyo, email="old@x.io", first_name="Old")
    ext = create_profile(klaviyo, external_id="u-dup")
    with disable_run_logger():
        out = await pf.upsert_profiles.fn(
            [
                {"email": "new@x.io"},
                {"email": "old@x.io", "external_id": "u-dup"},
                {"first_name": "x"},
                {"email": "old@x.io", "first_name": None},
            ],
            client,
        )
    assert [r.index for r in out] == [0, 1, 2, 3]
    assert out[0].ok and out[0].value["created"] is True and out[0].value["id"] not in (old, ext)
    assert not out[1].ok and out[1].error.status == 409 and out[1].value["duplicate_profile_id"] in (old, ext)
    assert not out[2].ok and out[2].error.code == "invalid_input"
    assert out[3].ok and out[3].value == {"id": old, "created": False}
    assert requests_to(klaviyo, "create_or_update_profile") == 3  # the invalid item was never sent
    assert sandbox_profiles(klaviyo)[old]["attributes"]["first_name"] is None  # null clears


async def test_bulk_import_job_polls_and_maps_errors(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    list_id = create_list(klaviyo, "Imported")
    with disable_run_logger():
        out = await pf.bulk_import_profiles.fn(
            [
                {"email": "a@x.io"},
                {"phone_number": "nope"},
                {"email": "not-an-email"},
                {"traits": 1},
                {"email": "d@x.io"},
            ],
            client,
            list_ids=[list_id],
            poll_interval=0.01,
        )
    assert [r.ok for r in out] == [True, False, False, False, True]
    assert out[0].value["job_id"] and out[1].error.pointer.endswith("/phone_number")
    assert "phone" in (out[1].error.detail or "") and "email" in (out[2].error.detail or "").lower()
    assert out[3].error.code == "invalid_input"
    assert requests_to(klaviyo, "get_bulk_import_profiles_job") >= 1
    assert requests_to(klaviyo, "get_errors_for_bulk_import_profiles_job") >= 1
    members = {m for k in klaviyo.get("/__sandbox/lists").json() if k["id"] == list_id for m in k["members"]}
    emails = {p["attributes"].get("email") for pid, p in sandbox_profiles(klaviyo).items() if pid in members}
    assert emails == {"a@x.io", "d@x.io"}


async def test_bulk_events_fail_only_the_profile_the_server_points_at(
    klaviyo: httpx.Client, client: KlaviyoClient
) -> None:
    events = [
        {"metric": "Paid", "profile": {"email": f"u{i}@x.io"}, "properties": {"i": i}, "unique_id": f"m{i}"}
        for i in range(4)
    ]
    events[2]["profile"] = {"email": "u2@x.io", "phone_number": "12"}  # only the server knows this is invalid
    events.append(dict(events[0]))  # in-request duplicate of item 0
    events.append({"metric": "", "profile": {"email": "z@x.io"}})  # invalid before sending
    with disable_run_logger():
        out = await ev.bulk_create_events.fn(events, client)
    assert [r.ok for r in out] == [True, True, False, True, True, False]
    assert out[2].error.pointer.endswith("/profile/data/attributes/phone_number")
    assert out[4].value == {"duplicate": True, "duplicate_of": 0} and out[5].error.code == "invalid_input"
    assert requests_to(klaviyo, "bulk_create_events") == 2  # rejected once, the rest resent
    stored = klaviyo.get("/__sandbox/events", params={"metric": "Paid"}).json()
    assert sorted(e["properties"]["i"] for e in stored) == [0, 1, 3]


async def test_bulk_events_strict_mode_repeat_is_a_duplicate(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    klaviyo.post("/__sandbox/config", json={"strict_bulk": True}).raise_for_status()
    first = [{"metric": "Paid", "profile": {"email": "a@x.io"}, "unique_id": "order-1"}]
    with disable_run_logger():
        assert (await ev.bulk_create_events.fn(first, client))[0].ok
        out = await ev.bulk_create_events.fn(
            [*first, {"metric": "Paid", "profile": {"email": "a@x.io"}, "unique_id": "order-2"}], client
        )
    assert out[0].ok and out[0].value == {"duplicate": True} and out[1].ok and out[1].value is None
    assert requests_to(klaviyo, "bulk_create_events") == 3
    ids = sorted(e["properties"]["$event_id"] for e in klaviyo.get("/__sandbox/events").json())
    assert ids == ["order-1", "order-2"]


async def test_bulk_events_chunked_at_1000(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    events = [{"metric": "Viewed", "profile": {"anonymous_id": "a"}, "unique_id": str(i)} for i in range(2001)]
    with disable_run_logger():
        out = await ev.bulk_create_events.fn(events, client)
    assert all(r.ok for r in out)
    assert requests_to(klaviyo, "bulk_create_events") == 3
    assert len(klaviyo.get("/__sandbox/events").json()) == 2001


async def test_create_events_single(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    with disable_run_logger():
        out = await ev.create_events.fn(
            [
                {"metric": "A", "profile": {"email": "a@x.io"}, "properties": {"ok": 1}},
                {"metric": "A", "profile": {"email": "a@x.io"}, "time": "1980-01-01T00:00:00Z"},
            ],
            client,
        )
    # a time Klaviyo rejects (before 1990) fails locally, with the reason, and is never sent
    assert out[0].ok and not out[1].ok and out[1].error.code == "invalid_input"
    assert "before 1990" in (out[1].error.detail or "")
    assert [e["properties"] for e in klaviyo.get("/__sandbox/events").json()] == [{"ok": 1}]


async def test_list_membership_chunks_and_pointer(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    list_id = create_list(klaviyo, "Members")
    with disable_run_logger():
        imported = await pf.bulk_import_profiles.fn(
            [{"email": f"m{i}@x.io"} for i in range(1200)], client, poll_interval=0.01
        )
    assert all(r.ok for r in imported)
    ids = sorted(sandbox_profiles(klaviyo))
    ids[1100] = "missing"
    with disable_run_logger():
        out = await li.add_profiles_to_list.fn(list_id, ids, client)
    assert sum(not r.ok for r in out) == 1 and not out[1100].ok and out[1100].error.pointer == "/data/100/id"
    assert requests_to(klaviyo, "add_profiles_to_list") == 3  # 1000, then 200 rejected, then 199 resent
    members = next(k["members"] for k in klaviyo.get("/__sandbox/lists").json() if k["id"] == list_id)
    assert len(members) == 1199
    with disable_run_logger():
        removed = await li.remove_profiles_from_list.fn(list_id, ids[:2], client)
    assert all(r.ok for r in removed)
    members = next(k["members"] for k in klaviyo.get("/__sandbox/lists").json() if k["id"] == list_id)
    assert len(members) == 1197 and ids[0] not in members


async def test_get_or_create_lists_creates_once(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    lists_service.clear_list_cache()
    old = create_list(klaviyo, "Old")
    with disable_run_logger():
        first = await li.get_or_create_lists.fn(["Old", "New", "New"], client)
        again = await li.get_or_create_lists.fn(["New"], client)
    new = first[1].value["id"]
    assert [r.value for r in first] == [
        {"id": old, "created": False},
        {"id": new, "created": True},
        {"id": new, "created": True},
    ]
    assert again[0].value["id"] == new
    assert requests_to(klaviyo, "create_list") == 2  # "Old" by the test itself, "New" once
    assert requests_to(klaviyo, "get_lists") >= 1
    assert sorted(k["name"] for k in klaviyo.get("/__sandbox/lists").json()) == ["New", "Old"]


async def test_subscribe_and_unsubscribe_chunking(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    list_id = create_list(klaviyo, "Newsletter")
    people = [{"email": f"u{i}@x.io"} for i in range(1001)]
    with disable_run_logger():
        sub = await su.subscribe_profiles.fn(people, client, list_id=list_id, custom_source="Segment")
        unsub = await su.unsubscribe_profiles.fn(people[:150] + [{"id": "nope"}], client)
    assert all(r.ok for r in sub) and unsub[-1].error.code == "invalid_input" and all(r.ok for r in unsub[:150])
    assert requests_to(klaviyo, "bulk_subscribe_profiles") == 2
    assert requests_to(klaviyo, "bulk_unsubscribe_profiles") == 2  # 100 + 50
    consent = {
        p["attributes"]["email"]: p["attributes"]["subscriptions"]["email"]["marketing"]["consent"]
        for p in sandbox_profiles(klaviyo).values()
    }
    assert consent["u0@x.io"] == consent["u149@x.io"] == "UNSUBSCRIBED"
    assert consent["u150@x.io"] == consent["u1000@x.io"] == "SUBSCRIBED"


async def test_get_profiles_follows_pages_and_consent(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    with disable_run_logger():
        await pf.bulk_import_profiles.fn([{"email": f"p{i}@x.io"} for i in range(150)], client, poll_interval=0.01)
    by_email = {p["attributes"]["email"]: pid for pid, p in sandbox_profiles(klaviyo).items()}
    wanted = [*(f"p{i}@x.io" for i in range(150)), "none@x.io"]
    with disable_run_logger():
        out = await pf.get_profiles_by_identifiers.fn(wanted, client)
        consent = await pf.get_profile_consent.fn(["p7@x.io"], client, field="email")
    assert [r.value and r.value["id"] for r in out] == [by_email[f"p{i}@x.io"] for i in range(150)] + [None]
    assert requests_to(klaviyo, "get_profiles") >= 3  # > 100 profiles: more than one page or filter
    assert consent[0].ok and consent[0].value["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"


async def test_metrics_events_and_deletion(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    pid = create_profile(klaviyo, email="a@x.io")
    now = datetime.now(UTC).replace(microsecond=0)
    klaviyo.post(
        "/__sandbox/engagement",
        json={
            "events": [
                {"metric": "Opened Email", "profile_id": pid, "datetime": (now - timedelta(days=3)).isoformat()},
                {"metric": "Opened Email", "profile_id": pid, "datetime": now.isoformat()},
            ]
        },
    ).raise_for_status()
    with disable_run_logger():
        names = await me.get_metrics.fn(client)
        events = await ev.get_events.fn(
            client, metric_id=names["Opened Email"], since=now - timedelta(hours=1), include=["profile"]
        )
        deleted = await pr.request_profile_deletions.fn([{"email": "a@x.io"}, {"external_id": "u1"}], client)
    assert set(names) == {"Opened Email"}
    assert len(events["data"]) == 1 and [r["id"] for r in events["included"]] == [pid]
    assert deleted[0].ok and deleted[1].error.code == "invalid_input"
    assert sandbox_profiles(klaviyo) == {}
