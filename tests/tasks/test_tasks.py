"""Batched Klaviyo tasks against a real local HTTP fake: per-item results, chunking, partial failures."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect.logging import disable_run_logger

from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.tasks import klaviyo_events as ev
from klaviyo_segment.tasks import klaviyo_lists as li
from klaviyo_segment.tasks import klaviyo_metrics as me
from klaviyo_segment.tasks import klaviyo_privacy as pr
from klaviyo_segment.tasks import klaviyo_profiles as pf
from klaviyo_segment.tasks import klaviyo_subscriptions as su
from tests.tasks.fake_klaviyo import FakeKlaviyo


def err(status: int, code: str, pointer: str | None = None, **meta: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"status": status, "code": code, "title": code, "detail": code, "meta": meta}
    if pointer:
        e["source"] = {"pointer": pointer}
    return {"errors": [e]}


async def test_upsert_profiles_per_item(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    def handler(_: dict[str, str], body: Any) -> tuple[int, Any]:
        email = body["data"]["attributes"].get("email")
        if email == "dup@x.io":
            return 409, err(409, "duplicate_profile", "/data/attributes", duplicate_profile_id="01DUP")
        return (201 if email == "new@x.io" else 200), {"data": {"type": "profile", "id": f"id-{email}"}}

    fake.on("POST", "/api/profile-import", handler)
    with disable_run_logger():
        out = await pf.upsert_profiles.fn([{"email": "new@x.io"}, {"email": "dup@x.io"}, {"first_name": "x"},
                                           {"email": "old@x.io", "first_name": None}], client)
    assert [r.index for r in out] == [0, 1, 2, 3]
    assert out[0].ok and out[0].value == {"id": "id-new@x.io", "created": True}
    assert not out[1].ok and out[1].value == {"duplicate_profile_id": "01DUP"} and out[1].error.status == 409
    assert not out[2].ok and out[2].error.code == "invalid_input"
    assert out[3].ok and out[3].value["created"] is False
    assert len(fake.calls("POST", "/api/profile-import")) == 3  # the invalid item was never sent


async def test_bulk_events_resend_after_pointer_failure(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    def handler(_: dict[str, str], body: Any) -> tuple[int, Any]:
        groups = body["data"]["attributes"]["events-bulk-create"]["data"]
        for n, g in enumerate(groups):
            for m, e in enumerate(g["attributes"]["events"]["data"]):
                props = e["attributes"]["properties"]
                if props.get("bad"):
                    return 400, err(400, "invalid", f"/data/attributes/events-bulk-create/data/{n}/attributes/"
                                                    f"events/data/{m}/attributes/properties")
                if props.get("seen"):
                    return 400, err(400, "duplicate_unique_id", f"/data/attributes/events-bulk-create/data/{n}")
        return 202, None

    fake.on("POST", "/api/event-bulk-create-jobs", handler)
    events = [{"metric": "Paid", "profile": {"email": f"u{i}@x.io"}, "properties": {"i": i}, "unique_id": f"m{i}"}
              for i in range(6)]
    events[2]["properties"]["bad"] = True
    events[4]["properties"]["seen"] = True
    events.append(dict(events[0]))  # in-request duplicate of item 0
    events.append({"metric": "", "profile": {"email": "z@x.io"}})  # invalid
    with disable_run_logger():
        out = await ev.bulk_create_events.fn(events, client)
    assert [r.ok for r in out] == [True, True, False, True, True, True, True, False]
    assert out[2].error.pointer.endswith("/events/data/0/attributes/properties")
    assert out[4].value == {"duplicate": True} and out[6].value == {"duplicate": True, "duplicate_of": 0}
    calls = fake.calls("POST", "/api/event-bulk-create-jobs")
    assert len(calls) == 3
    last = calls[-1].body["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(last) == 4  # 0, 1, 3, 5 resent


async def test_bulk_events_chunked_at_1000(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    fake.on("POST", "/api/event-bulk-create-jobs", lambda q, b: (202, None))
    events = [{"metric": "Viewed", "profile": {"anonymous_id": "a"}, "unique_id": str(i)} for i in range(2001)]
    with disable_run_logger():
        out = await ev.bulk_create_events.fn(events, client)
    assert all(r.ok for r in out)
    sizes = [sum(len(g["attributes"]["events"]["data"]) for g in c.body["data"]["attributes"]["events-bulk-create"]
                 ["data"]) for c in fake.calls("POST", "/api/event-bulk-create-jobs")]
    assert sizes == [1000, 1000, 1]


async def test_create_events_single(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    fake.on("POST", "/api/events", lambda q, b: (202, None) if b["data"]["attributes"]["properties"].get("ok")
            else (400, err(400, "invalid")))
    with disable_run_logger():
        out = await ev.create_events.fn([{"metric": "A", "profile": {"email": "a@x.io"}, "properties": {"ok": 1}},
                                         {"metric": "A", "profile": {"email": "a@x.io"}}], client)
    assert out[0].ok and not out[1].ok and out[1].error.code == "invalid"


async def test_bulk_import_job_polls_and_maps_errors(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    polls = iter(["queued", "processing", "complete"])
    fake.on("POST", "/api/profile-bulk-import-jobs", lambda q, b: (202, {"data": {"id": "JOB1"}}))
    fake.on("GET", "/api/profile-bulk-import-jobs/JOB1",
            lambda q, b: (200, {"data": {"id": "JOB1", "attributes": {"status": next(polls), "failed_count": 2}}}))
    fake.on("GET", "/api/profile-bulk-import-jobs/JOB1/import-errors", lambda q, b: (200, {"data": [
        {"type": "import-error", "attributes": {"code": "invalid", "detail": "bad phone",
                                                "source": {"pointer": "/data/attributes/profiles/data/1"}}},
        {"type": "import-error", "attributes": {"code": "invalid", "detail": "bad",
                                                "original_payload": {"email": "c@x.io"}}}], "links": {}}))
    with disable_run_logger():
        out = await pf.bulk_import_profiles.fn([{"email": "a@x.io"}, {"phone_number": "nope"}, {"email": "c@x.io"},
                                                {"traits": 1}], client, list_ids=["L1"], poll_interval=0)
    assert [r.ok for r in out] == [True, False, False, False]
    assert out[0].value == {"job_id": "JOB1"} and out[1].error.detail == "bad phone"
    assert out[3].error.code == "invalid_input"
    assert len(fake.calls("GET", "/api/profile-bulk-import-jobs/JOB1")) == 3


async def test_list_membership_chunks_and_pointer(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    def handler(_: dict[str, str], body: Any) -> tuple[int, Any]:
        ids = [d["id"] for d in body["data"]]
        return (400, err(400, "not_found", f"/data/{ids.index('missing')}/id")) if "missing" in ids else (204, None)

    fake.on("POST", "/api/lists/L1/relationships/profiles", handler)
    ids = [f"p{i}" for i in range(2500)]
    ids[1500] = "missing"
    with disable_run_logger():
        out = await li.add_profiles_to_list.fn("L1", ids, client)
    assert sum(not r.ok for r in out) == 1 and not out[1500].ok
    sizes = [len(c.body["data"]) for c in fake.calls("POST", "/api/lists/L1/relationships/profiles")]
    assert sizes == [1000, 1000, 999, 500]
    fake.on("DELETE", "/api/lists/L1/relationships/profiles", lambda q, b: (204, None))
    with disable_run_logger():
        assert all(r.ok for r in await li.remove_profiles_from_list.fn("L1", ["a", "b"], client))


async def test_get_or_create_lists_creates_once(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    li.clear_list_cache()
    fake.on("GET", "/api/lists", lambda q, b: (200, {"data": [{"id": "L-old", "attributes": {"name": "Old"}}]}))
    fake.on("POST", "/api/lists", lambda q, b: (201, {"data": {"id": "L-new", "attributes": b["data"]["attributes"]}}))
    with disable_run_logger():
        first = await li.get_or_create_lists.fn(["Old", "New", "New"], client)
        again = await li.get_or_create_lists.fn(["New"], client)
    assert [r.value for r in first] == [{"id": "L-old", "created": False}, {"id": "L-new", "created": True},
                                        {"id": "L-new", "created": True}]
    assert again[0].value["id"] == "L-new"
    assert len(fake.calls("POST", "/api/lists")) == 1 and len(fake.calls("GET", "/api/lists")) == 1


async def test_subscribe_and_unsubscribe_chunking(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    fake.on("POST", "/api/profile-subscription-bulk-create-jobs", lambda q, b: (202, None))
    fake.on("POST", "/api/profile-subscription-bulk-delete-jobs", lambda q, b: (202, None))
    people = [{"email": f"u{i}@x.io"} for i in range(1001)]
    with disable_run_logger():
        sub = await su.subscribe_profiles.fn(people, client, list_id="L1", custom_source="Segment")
        unsub = await su.unsubscribe_profiles.fn(people[:150] + [{"id": "nope"}], client)
    assert all(r.ok for r in sub) and unsub[-1].error.code == "invalid_input" and all(r.ok for r in unsub[:150])
    assert len(fake.calls("POST", "/api/profile-subscription-bulk-create-jobs")) == 2
    assert [len(c.body["data"]["attributes"]["profiles"]["data"])
            for c in fake.calls("POST", "/api/profile-subscription-bulk-delete-jobs")] == [100, 50]


async def test_get_profiles_follows_pages_and_consent(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    def handler(query: dict[str, str], _: Any) -> tuple[int, Any]:
        if query.get("page[cursor]") == "2":
            return 200, {"data": [{"id": "P2", "attributes": {"email": "b@x.io", "subscriptions": {"email": 2}}}],
                         "links": {"next": None}}
        return 200, {"data": [{"id": "P1", "attributes": {"email": "a@x.io", "subscriptions": {"email": 1}}}],
                     "links": {"next": f"{fake.url}/api/profiles?page%5Bcursor%5D=2"}}

    fake.on("GET", "/api/profiles", handler)
    with disable_run_logger():
        out = await pf.get_profiles_by_identifiers.fn(["A@x.io", "b@x.io", "none@x.io"], client)
        consent = await pf.get_profile_consent.fn(["a@x.io"], client, field="email")
    assert [r.value and r.value["id"] for r in out] == ["P1", "P2", None]
    first = fake.calls("GET", "/api/profiles")[0].query
    assert first["filter"] == 'any(email,["A@x.io","b@x.io","none@x.io"])' and first["page[size]"] == "100"
    assert consent[0].value == {"email": 1}
    assert fake.calls("GET", "/api/profiles")[-1].query.get("additional-fields[profile]") in (None, "subscriptions")


async def test_metrics_events_and_deletion(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    fake.on("GET", "/api/metrics", lambda q, b: (200, {"data": [{"id": "M1", "attributes": {"name": "Opened Email"}},
                                                                {"id": "M2", "attributes": {"name": "Opened Email"}}]}))
    fake.on("GET", "/api/events", lambda q, b: (200, {"data": [{"id": "E1"}], "included": [{"type": "profile",
                                                                                            "id": "P1"}]}))
    fake.on("POST", "/api/data-privacy-deletion-jobs", lambda q, b: (202, None))
    since = datetime(2026, 7, 1, tzinfo=timezone.utc)
    with disable_run_logger():
        names = await me.get_metrics.fn(client)
        events = await ev.get_events.fn(client, metric_id="M1", since=since, include=["profile"])
        deleted = await pr.request_profile_deletions.fn([{"email": "a@x.io"}, {"external_id": "u1"}], client)
    assert names == {"Opened Email": "M1"}
    assert events == {"data": [{"id": "E1"}], "included": [{"type": "profile", "id": "P1"}]}
    assert fake.calls("GET", "/api/events")[0].query["filter"] == (
        'and(equals(metric_id,"M1"),greater-or-equal(datetime,2026-07-01T00:00:00Z))')
    assert deleted[0].ok and deleted[1].error.code == "invalid_input"
