"""Klaviyo emulator: events, unique_id de-duplication (single, bulk, strict), Get Events and metrics."""

from __future__ import annotations

from typing import Any

import httpx


def event(
    metric: str, profile: dict[str, Any], unique_id: str | None = None, time: str | None = None, **properties: Any
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "properties": properties,
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        "profile": {"data": {"type": "profile", "attributes": profile}},
    }
    if unique_id:
        attrs["unique_id"] = unique_id
    if time:
        attrs["time"] = time
    return {"data": {"type": "event", "attributes": attrs}}


def bulk(groups: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": {"type": "profile", "attributes": profile}},
                                "events": {
                                    "data": [
                                        {
                                            "type": "event",
                                            "attributes": {
                                                "properties": {},
                                                "metric": {
                                                    "data": {"type": "metric", "attributes": {"name": e["metric"]}}
                                                },
                                                "unique_id": e["unique_id"],
                                                "time": e.get("time", "2026-01-01T00:00:00Z"),
                                            },
                                        }
                                        for e in events
                                    ]
                                },
                            },
                        }
                        for profile, events in groups
                    ]
                }
            },
        }
    }


def stored(client: httpx.Client, metric: str) -> list[dict[str, Any]]:
    return client.get("/__sandbox/events", params={"metric": metric}).json()


def test_create_event_202_no_body_and_first_unique_id_wins(klaviyo: httpx.Client) -> None:
    r = klaviyo.post("/api/events", json=event("Order Completed", {"email": "e@example.com"}, "o-1", total=1))
    assert r.status_code == 202 and r.content == b""
    r = klaviyo.post("/api/events", json=event("Order Completed", {"email": "e@example.com"}, "o-1", total=2))
    assert r.status_code == 202
    events = stored(klaviyo, "Order Completed")
    assert len(events) == 1 and events[0]["properties"]["total"] == 1


def test_without_unique_id_events_in_the_same_second_collapse(klaviyo: httpx.Client) -> None:
    for _ in range(2):
        klaviyo.post("/api/events", json=event("Viewed", {"email": "t@example.com"}, time="2026-01-01T00:00:00Z"))
    klaviyo.post("/api/events", json=event("Viewed", {"email": "t@example.com"}, time="2026-01-01T00:00:01Z"))
    assert len(stored(klaviyo, "Viewed")) == 2


def test_event_time_out_of_range_is_400(klaviyo: httpx.Client) -> None:
    r = klaviyo.post("/api/events", json=event("Old", {"email": "t@example.com"}, time="1985-01-01T00:00:00Z"))
    assert r.status_code == 400


def test_event_needs_a_profile_identifier(klaviyo: httpx.Client) -> None:
    assert klaviyo.post("/api/events", json=event("X", {"first_name": "Nobody"})).status_code == 400


def test_anonymous_only_profile_is_reachable_through_events(klaviyo: httpx.Client) -> None:
    assert klaviyo.post("/api/events", json=event("Page", {"anonymous_id": "anon-1"}, "u1")).status_code == 202
    profiles = klaviyo.get("/__sandbox/profiles").json()
    assert len(profiles) == 1 and profiles[0]["attributes"]["email"] is None
    klaviyo.post("/api/events", json=event("Page", {"anonymous_id": "anon-1"}, "u2"))
    assert len(klaviyo.get("/__sandbox/profiles").json()) == 1
    assert len(stored(klaviyo, "Page")) == 2


def test_bulk_repeat_inside_request_fails_everything(klaviyo: httpx.Client) -> None:
    who = {"email": "b@example.com"}
    body = bulk(
        [
            (
                who,
                [
                    {"metric": "Bulk", "unique_id": "1"},
                    {"metric": "Bulk", "unique_id": "2"},
                    {"metric": "Bulk", "unique_id": "1"},
                ],
            )
        ]
    )
    r = klaviyo.post("/api/event-bulk-create-jobs", json=body)
    assert r.status_code == 400 and "unique_id" in r.json()["errors"][0]["source"]["pointer"]
    assert stored(klaviyo, "Bulk") == [] and klaviyo.get("/__sandbox/profiles").json() == []
    ok = bulk([(who, [{"metric": "Bulk", "unique_id": "1"}, {"metric": "Other", "unique_id": "1"}])])
    r = klaviyo.post("/api/event-bulk-create-jobs", json=ok)
    assert r.status_code == 202 and r.content == b""
    assert len(stored(klaviyo, "Bulk")) == 1 and len(stored(klaviyo, "Other")) == 1


def test_bulk_repeat_of_stored_event_ignored_unless_strict(klaviyo: httpx.Client) -> None:
    who = {"email": "s@example.com"}
    klaviyo.post("/api/event-bulk-create-jobs", json=bulk([(who, [{"metric": "M", "unique_id": "1"}])]))
    again = bulk([(who, [{"metric": "M", "unique_id": "1"}, {"metric": "M", "unique_id": "2"}])])
    assert klaviyo.post("/api/event-bulk-create-jobs", json=again).status_code == 202
    assert len(stored(klaviyo, "M")) == 2
    klaviyo.post("/__sandbox/config", json={"strict_bulk": True}).raise_for_status()
    third = bulk([(who, [{"metric": "M", "unique_id": "2"}, {"metric": "M", "unique_id": "3"}])])
    assert klaviyo.post("/api/event-bulk-create-jobs", json=third).status_code == 400
    assert len(stored(klaviyo, "M")) == 2


def test_bulk_over_1000_events_is_400(klaviyo: httpx.Client) -> None:
    events = [{"metric": "Big", "unique_id": str(i)} for i in range(1001)]
    r = klaviyo.post("/api/event-bulk-create-jobs", json=bulk([({"email": "big@example.com"}, events)]))
    assert r.status_code == 400


def test_get_events_filters_sort_include_and_pagination(klaviyo: httpx.Client) -> None:
    for day in range(1, 6):
        klaviyo.post(
            "/api/events", json=event("Opened", {"email": "g@example.com"}, f"o{day}", time=f"2026-03-0{day}T12:00:00Z")
        )
    klaviyo.post("/api/events", json=event("Clicked", {"email": "g@example.com"}, "c1", time="2026-03-03T12:00:00Z"))
    metrics = {m["attributes"]["name"]: m["id"] for m in klaviyo.get("/api/metrics").json()["data"]}
    flt = (
        f'and(equals(metric_id,"{metrics["Opened"]}"),greater-or-equal(datetime,2026-03-02T00:00:00Z),'
        "less-than(datetime,2026-03-05T00:00:00Z))"
    )
    r = klaviyo.get("/api/events", params={"filter": flt, "sort": "-datetime", "include": "metric,profile"})
    body = r.json()
    assert [e["attributes"]["datetime"][:10] for e in body["data"]] == ["2026-03-04", "2026-03-03", "2026-03-02"]
    assert {i["type"] for i in body["included"]} == {"metric", "profile"}
    quoted = klaviyo.get("/api/events", params={"filter": 'greater-than(datetime,"2026-03-02T00:00:00Z")'})
    assert quoted.status_code == 400
    pages, url = 0, "/api/events?page[size]=2&sort=datetime"
    ids: list[str] = []
    while url:
        page = klaviyo.get(url).json()
        ids += [e["id"] for e in page["data"]]
        url, pages = page["links"].get("next"), pages + 1
    assert pages == 3 and len(set(ids)) == 6


def test_get_events_page_size_capped_at_200(klaviyo: httpx.Client) -> None:
    groups = [({"email": "cap@example.com"}, [{"metric": "Cap", "unique_id": str(i)} for i in range(250)])]
    assert klaviyo.post("/api/event-bulk-create-jobs", json=bulk(groups)).status_code == 202
    page = klaviyo.get("/api/events", params={"page[size]": "1000"}).json()
    assert len(page["data"]) == 200 and page["links"]["next"]
    assert klaviyo.get("/api/events", params={"page[size]": "1001"}).status_code == 400


def test_metrics_created_by_name_once(klaviyo: httpx.Client) -> None:
    for uid in ("a", "b"):
        klaviyo.post("/api/events", json=event("Signed Up", {"email": "m@example.com"}, uid))
    names = [m["attributes"]["name"] for m in klaviyo.get("/api/metrics").json()["data"]]
    assert names == ["Signed Up"]
