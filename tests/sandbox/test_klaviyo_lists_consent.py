"""Klaviyo emulator: lists, membership, consent and suppressions, bulk profile import jobs and deletion."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from klaviyo_segment.devkit.sandbox.server import Sandbox
from tests.fixtures.sandbox import klaviyo_headers


def new_list(client: httpx.Client, name: str, opt_in: str | None = None) -> httpx.Response:
    attrs: dict[str, Any] = {"name": name}
    if opt_in:
        attrs["opt_in_process"] = opt_in
    return client.post("/api/lists", json={"data": {"type": "list", "attributes": attrs}})


def new_profile(client: httpx.Client, **attrs: Any) -> str:
    return client.post("/api/profiles", json={"data": {"type": "profile", "attributes": attrs}}).json()["data"]["id"]


def subscription_job(
    kind: str, profiles: list[dict[str, Any]], list_id: str | None = None, **attrs: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "data": {
            "type": f"profile-subscription-bulk-{kind}-job",
            "attributes": {"profiles": {"data": profiles}, **attrs},
        }
    }
    if list_id:
        body["data"]["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return body


def email_sub(email: str, consent: str = "SUBSCRIBED") -> dict[str, Any]:
    return {
        "type": "profile",
        "attributes": {"email": email, "subscriptions": {"email": {"marketing": {"consent": consent}}}},
    }


def consent(client: httpx.Client, email: str) -> dict[str, Any]:
    r = client.get(
        "/api/profiles", params={"filter": f'equals(email,"{email}")', "additional-fields[profile]": "subscriptions"}
    )
    return r.json()["data"][0]["attributes"]["subscriptions"]["email"]["marketing"]


def test_lists_page_size_max_10_cursor_and_name_filter(klaviyo: httpx.Client) -> None:
    for i in range(12):
        assert new_list(klaviyo, f"L{i}").status_code == 201
    assert klaviyo.get("/api/lists", params={"page[size]": "11"}).status_code == 400
    first = klaviyo.get("/api/lists").json()
    assert len(first["data"]) == 10 and first["links"]["next"]
    assert len(klaviyo.get(first["links"]["next"]).json()["data"]) == 2
    r = klaviyo.get("/api/lists", params={"filter": 'any(name,["L3","L7"])'})
    assert sorted(k["attributes"]["name"] for k in r.json()["data"]) == ["L3", "L7"]
    r = klaviyo.get("/api/lists", params={"filter": 'equals(name,"L5")'})
    assert [k["attributes"]["name"] for k in r.json()["data"]] == ["L5"]


def test_list_creation_capped_at_150_per_day(klaviyo: httpx.Client) -> None:
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(lambda i: new_list(klaviyo, f"cap{i}").status_code, range(150)))
    assert statuses == [201] * 150
    r = new_list(klaviyo, "one too many")
    assert r.status_code == 429 and r.json()["errors"][0]["code"] == "throttled"
    assert int(r.headers["Retry-After"]) > 0


def test_membership_add_remove_204_and_errors(klaviyo: httpx.Client) -> None:
    list_id = new_list(klaviyo, "Members").json()["data"]["id"]
    ids = [new_profile(klaviyo, email=f"m{i}@example.com") for i in range(3)]
    refs = [{"type": "profile", "id": i} for i in ids]
    r = klaviyo.post(f"/api/lists/{list_id}/relationships/profiles", json={"data": refs})
    assert r.status_code == 204 and r.content == b""
    members = klaviyo.get(f"/api/lists/{list_id}/profiles").json()["data"]
    assert sorted(p["id"] for p in members) == sorted(ids)
    klaviyo.request("DELETE", f"/api/lists/{list_id}/relationships/profiles", json={"data": refs[:1]})
    members = klaviyo.get(f"/api/lists/{list_id}/profiles").json()["data"]
    assert sorted(p["id"] for p in members) == sorted(ids[1:])
    unknown = klaviyo.post(
        f"/api/lists/{list_id}/relationships/profiles",
        json={"data": [{"type": "profile", "id": "01NOPE00000000000000000000"}]},
    )
    assert unknown.status_code in (400, 404)
    too_many = [{"type": "profile", "id": ids[0]}] * 1001
    assert klaviyo.post(f"/api/lists/{list_id}/relationships/profiles", json={"data": too_many}).status_code == 400
    assert klaviyo.post("/api/lists/NOLIST/relationships/profiles", json={"data": refs}).status_code == 404


def test_subscribe_sets_consent_and_clears_suppressions(klaviyo: httpx.Client) -> None:
    klaviyo.post(
        "/__sandbox/engagement", json={"events": [{"metric": "Marked Email as Spam", "email": "c@example.com"}]}
    ).raise_for_status()
    assert consent(klaviyo, "c@example.com")["suppression"][0]["reason"] == "SPAM_REPORT"
    list_id = new_list(klaviyo, "News").json()["data"]["id"]
    r = klaviyo.post(
        "/api/profile-subscription-bulk-create-jobs",
        json=subscription_job("create", [email_sub("c@example.com")], list_id),
    )
    assert r.status_code == 202 and r.content == b""
    state = consent(klaviyo, "c@example.com")
    assert state["consent"] == "SUBSCRIBED" and state["suppression"] == [] and state["consent_timestamp"]
    assert state["can_receive_email_marketing"] is True
    assert len(klaviyo.get(f"/api/lists/{list_id}/profiles").json()["data"]) == 1


def test_sms_consent_needs_phone_and_is_per_channel(klaviyo: httpx.Client) -> None:
    sms = {
        "type": "profile",
        "attributes": {
            "phone_number": "+14155550199",
            "subscriptions": {"sms": {"marketing": {"consent": "SUBSCRIBED"}}},
        },
    }
    assert (
        klaviyo.post("/api/profile-subscription-bulk-create-jobs", json=subscription_job("create", [sms])).status_code
        == 202
    )
    r = klaviyo.get("/api/profiles", params={"additional-fields[profile]": "subscriptions"})
    subs = r.json()["data"][0]["attributes"]["subscriptions"]
    assert subs["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert subs["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    no_phone = {
        "type": "profile",
        "attributes": {"email": "x@example.com", "subscriptions": {"sms": {"marketing": {"consent": "SUBSCRIBED"}}}},
    }
    assert (
        klaviyo.post(
            "/api/profile-subscription-bulk-create-jobs", json=subscription_job("create", [no_phone])
        ).status_code
        == 400
    )


def test_consented_at_requires_historical_import(klaviyo: httpx.Client) -> None:
    item = email_sub("h@example.com")
    item["attributes"]["subscriptions"]["email"]["marketing"]["consented_at"] = "2025-01-01T00:00:00Z"
    r = klaviyo.post("/api/profile-subscription-bulk-create-jobs", json=subscription_job("create", [item]))
    assert r.status_code == 400
    r = klaviyo.post(
        "/api/profile-subscription-bulk-create-jobs", json=subscription_job("create", [item], historical_import=True)
    )
    assert r.status_code == 202
    assert consent(klaviyo, "h@example.com")["consent_timestamp"].startswith("2025-01-01")


def test_unsubscribe_not_in_list_is_global(klaviyo: httpx.Client) -> None:
    list_id = new_list(klaviyo, "Promo").json()["data"]["id"]
    klaviyo.post(
        "/api/profile-subscription-bulk-create-jobs",
        json=subscription_job("create", [email_sub("in@example.com")], list_id),
    )
    klaviyo.post(
        "/api/profile-subscription-bulk-create-jobs", json=subscription_job("create", [email_sub("out@example.com")])
    )
    body = subscription_job(
        "delete", [email_sub("in@example.com", "UNSUBSCRIBED"), email_sub("out@example.com", "UNSUBSCRIBED")], list_id
    )
    assert klaviyo.post("/api/profile-subscription-bulk-delete-jobs", json=body).status_code == 202
    assert consent(klaviyo, "in@example.com")["consent"] == "SUBSCRIBED"
    assert consent(klaviyo, "in@example.com")["list_suppressions"][0]["list_id"] == list_id
    assert consent(klaviyo, "out@example.com")["consent"] == "UNSUBSCRIBED"
    assert klaviyo.get("/__sandbox/state").json()["global_unsubscribes"] == 1
    too_many = subscription_job("delete", [email_sub(f"u{i}@example.com", "UNSUBSCRIBED") for i in range(101)])
    assert klaviyo.post("/api/profile-subscription-bulk-delete-jobs", json=too_many).status_code == 400


def test_bulk_import_job_lifecycle_errors_and_lists(sandbox_factory: Any) -> None:
    box: Sandbox = sandbox_factory(rate_limits="off", import_delay=0.3)
    with httpx.Client(base_url=box.klaviyo_url, headers=klaviyo_headers(box.klaviyo_api_key)) as client:
        list_id = new_list(client, "Imported").json()["data"]["id"]
        rows = [
            {"type": "profile", "attributes": {"email": "ok1@example.com"}},
            {"type": "profile", "attributes": {"email": "broken"}},
            {"type": "profile", "attributes": {"email": "ok2@example.com", "phone_number": "12"}},
            {"type": "profile", "attributes": {"external_id": "ok3"}},
        ]
        body = {
            "data": {
                "type": "profile-bulk-import-job",
                "attributes": {"profiles": {"data": rows}},
                "relationships": {"lists": {"data": [{"type": "list", "id": list_id}]}},
            }
        }
        r = client.post("/api/profile-bulk-import-jobs", json=body)
        assert r.status_code == 202
        job = r.json()["data"]
        assert job["attributes"]["status"] == "queued" and job["attributes"]["total_count"] == 4
        statuses = set()
        deadline = time.monotonic() + 30  # generous: the job takes well under a second on an idle machine
        while time.monotonic() < deadline:
            attrs = client.get(f"/api/profile-bulk-import-jobs/{job['id']}").json()["data"]["attributes"]
            statuses.add(attrs["status"])
            if attrs["status"] == "complete":
                break
            time.sleep(0.05)
        assert {"processing", "complete"} <= statuses
        assert attrs["completed_count"] == 2 and attrs["failed_count"] == 2
        errors = client.get(f"/api/profile-bulk-import-jobs/{job['id']}/import-errors").json()["data"]
        pointers = sorted(e["attributes"]["source"]["pointer"] for e in errors)
        assert pointers == [
            "/data/attributes/profiles/data/1/attributes/email",
            "/data/attributes/profiles/data/2/attributes/phone_number",
        ]
        assert errors[0]["attributes"]["original_payload"]["type"] == "profile"
        assert len(client.get(f"/api/lists/{list_id}/profiles").json()["data"]) == 2


def test_deletion_job_removes_profile_events_and_memberships(klaviyo: httpx.Client) -> None:
    list_id = new_list(klaviyo, "Del").json()["data"]["id"]
    pid = new_profile(klaviyo, email="gone@example.com")
    keep = new_profile(klaviyo, phone_number="+14155550111")
    klaviyo.post(
        f"/api/lists/{list_id}/relationships/profiles",
        json={"data": [{"type": "profile", "id": pid}, {"type": "profile", "id": keep}]},
    )
    klaviyo.post("/__sandbox/engagement", json={"events": [{"metric": "Opened Email", "profile_id": pid}]})
    body = {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": {"type": "profile", "attributes": {"email": "gone@example.com"}}}},
        }
    }
    assert klaviyo.post("/api/data-privacy-deletion-jobs", json=body).status_code == 202
    assert klaviyo.get(f"/api/profiles/{pid}").status_code == 404
    assert klaviyo.get("/__sandbox/events").json() == []
    assert [m["id"] for m in klaviyo.get(f"/api/lists/{list_id}/profiles").json()["data"]] == [keep]
    by_phone = {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": {"type": "profile", "attributes": {"phone_number": "+14155550111"}}}},
        }
    }
    assert klaviyo.post("/api/data-privacy-deletion-jobs", json=by_phone).status_code == 202
    assert klaviyo.get("/__sandbox/profiles").json() == []


def test_get_accounts_for_doctor(klaviyo: httpx.Client) -> None:
    data = klaviyo.get("/api/accounts").json()["data"]
    assert data[0]["type"] == "account" and data[0]["id"]
