"""Klaviyo emulator: auth, revision, scopes, closed-object validation and profile semantics over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.sandbox import klaviyo_headers


def profile(**attributes: Any) -> dict[str, Any]:
    return {"data": {"type": "profile", "attributes": attributes}}


def test_missing_or_wrong_key_is_401(klaviyo: httpx.Client) -> None:
    r = klaviyo.get("/api/profiles", headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "not_authenticated"
    r = klaviyo.get("/api/profiles", headers={"Authorization": "Klaviyo-API-Key pk_wrong"})
    assert r.status_code == 401


def test_revision_header_required_and_well_formed(klaviyo: httpx.Client) -> None:
    headers = dict(klaviyo.headers)
    headers.pop("revision")
    with httpx.Client(base_url=str(klaviyo.base_url), headers=headers) as bare:
        assert bare.get("/api/profiles").status_code == 400
    assert klaviyo.get("/api/profiles", headers={"revision": "July 2026"}).status_code == 400
    assert klaviyo.get("/api/profiles", headers={"revision": "2025-01-15"}).status_code == 200
    assert klaviyo.get("/api/profiles", headers={"revision": "2026-07-15.pre"}).status_code == 200


def test_missing_scope_is_403_before_body_validation(klaviyo: httpx.Client) -> None:
    klaviyo.post("/__sandbox/config", json={"keys": {"pk_readonly": ["profiles:read"]}}).raise_for_status()
    headers = klaviyo_headers("pk_readonly")
    r = klaviyo.post("/api/profile-import", json={"nonsense": True}, headers=headers)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "permission_denied"
    assert klaviyo.get("/api/profiles", headers=headers).status_code == 200


def test_unknown_attribute_rejected_like_klaviyo(klaviyo: httpx.Client) -> None:
    r = klaviyo.post("/api/profile-import", json=profile(email="a@example.com", favourite_color="red"))
    assert r.status_code == 400
    error = r.json()["errors"][0]
    assert error["detail"] == "'favourite_color' is not a valid field for the resource 'profile'."
    assert error["source"]["pointer"] == "/data/attributes/favourite_color"
    assert error["code"] == "invalid" and error["title"] == "Invalid input." and error["status"] == 400
    assert klaviyo.get("/__sandbox/stats").json()["validation_failures"]["create_or_update_profile"] == 1


def test_invalid_json_and_wrong_type_are_400(klaviyo: httpx.Client) -> None:
    assert klaviyo.post("/api/profile-import", content=b"{not json").status_code == 400
    r = klaviyo.post("/api/profile-import", json={"data": {"type": "event", "attributes": {}}})
    assert r.status_code == 400 and r.json()["errors"][0]["source"]["pointer"] == "/data/type"


def test_profile_import_upsert_201_then_200_and_null_clears(klaviyo: httpx.Client) -> None:
    first = klaviyo.post(
        "/api/profile-import",
        json=profile(email="u@example.com", first_name="Ann", properties={"plan": "pro", "seats": 3}),
    )
    assert first.status_code == 201
    pid = first.json()["data"]["id"]
    assert len(pid) == 26
    second = klaviyo.post(
        "/api/profile-import", json=profile(email="u@example.com", first_name=None, properties={"seats": 4})
    )
    assert second.status_code == 200 and second.json()["data"]["id"] == pid
    attrs = second.json()["data"]["attributes"]
    assert attrs["first_name"] is None
    assert attrs["properties"] == {"plan": "pro", "seats": 4}


def test_omitted_fields_are_left_unchanged(klaviyo: httpx.Client) -> None:
    klaviyo.post("/api/profile-import", json=profile(email="o@example.com", last_name="Lee"))
    r = klaviyo.post("/api/profile-import", json=profile(email="o@example.com", title="CTO"))
    assert r.json()["data"]["attributes"]["last_name"] == "Lee"


def test_duplicate_identifiers_answer_409_with_duplicate_id(klaviyo: httpx.Client) -> None:
    a = klaviyo.post("/api/profiles", json=profile(email="a@example.com")).json()["data"]["id"]
    b = klaviyo.post("/api/profiles", json=profile(phone_number="+14155550100")).json()["data"]["id"]
    r = klaviyo.post("/api/profiles", json=profile(email="a@example.com"))
    assert r.status_code == 409
    error = r.json()["errors"][0]
    assert error["code"] == "duplicate_profile" and error["meta"]["duplicate_profile_id"] == a
    mixed = klaviyo.post("/api/profile-import", json=profile(email="a@example.com", phone_number="+14155550100"))
    assert mixed.status_code == 409 and mixed.json()["errors"][0]["meta"]["duplicate_profile_id"] == b
    patch = klaviyo.patch(
        f"/api/profiles/{b}", json={"data": {"type": "profile", "id": b, "attributes": {"email": "a@example.com"}}}
    )
    assert patch.status_code == 409 and patch.json()["errors"][0]["meta"]["duplicate_profile_id"] == a


def test_patch_profile_updates_and_404_for_unknown(klaviyo: httpx.Client) -> None:
    pid = klaviyo.post("/api/profiles", json=profile(external_id="x-1")).json()["data"]["id"]
    r = klaviyo.patch(
        f"/api/profiles/{pid}", json={"data": {"type": "profile", "id": pid, "attributes": {"first_name": "Zed"}}}
    )
    assert r.status_code == 200 and r.json()["data"]["attributes"]["first_name"] == "Zed"
    missing = "01AAAAAAAAAAAAAAAAAAAAAAAA"
    r = klaviyo.patch(f"/api/profiles/{missing}", json={"data": {"type": "profile", "id": missing, "attributes": {}}})
    assert r.status_code == 404


def test_invalid_email_and_phone_rejected(klaviyo: httpx.Client) -> None:
    r = klaviyo.post("/api/profile-import", json=profile(email="not-an-email"))
    assert r.status_code == 400 and r.json()["errors"][0]["source"]["pointer"] == "/data/attributes/email"
    r = klaviyo.post("/api/profile-import", json=profile(phone_number="555-0100"))
    assert r.status_code == 400 and r.json()["errors"][0]["source"]["pointer"] == "/data/attributes/phone_number"


def test_merge_moves_events_and_deletes_source(klaviyo: httpx.Client) -> None:
    dest = klaviyo.post("/api/profiles", json=profile(email="d@example.com")).json()["data"]["id"]
    src = klaviyo.post("/api/profiles", json=profile(external_id="s-1", first_name="Src")).json()["data"]["id"]
    event = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {},
                "metric": {"data": {"type": "metric", "attributes": {"name": "Signed Up"}}},
                "profile": {"data": {"type": "profile", "attributes": {"external_id": "s-1"}}},
            },
        }
    }
    assert klaviyo.post("/api/events", json=event).status_code == 202
    body = {
        "data": {
            "type": "profile-merge",
            "id": dest,
            "relationships": {"profiles": {"data": [{"type": "profile", "id": src}]}},
        }
    }
    assert klaviyo.post("/api/profile-merge", json=body).status_code in (201, 202)
    assert klaviyo.get(f"/api/profiles/{src}").status_code == 404
    merged = klaviyo.get(f"/api/profiles/{dest}").json()["data"]["attributes"]
    assert merged["external_id"] == "s-1" and merged["email"] == "d@example.com"
    events = klaviyo.get("/api/events", params={"filter": f'equals(profile_id,"{dest}")'}).json()["data"]
    assert len(events) == 1


def test_get_profiles_filters_quoting_and_pagination(klaviyo: httpx.Client) -> None:
    for i in range(5):
        klaviyo.post("/api/profiles", json=profile(email=f"p{i}@example.com", external_id=f'id "{i}"'))
    r = klaviyo.get("/api/profiles", params={"filter": 'any(email,["p1@example.com","p3@example.com"])'})
    assert sorted(p["attributes"]["email"] for p in r.json()["data"]) == ["p1@example.com", "p3@example.com"]
    r = klaviyo.get("/api/profiles", params={"filter": 'equals(external_id,"id \\"2\\"")'})
    assert [p["attributes"]["email"] for p in r.json()["data"]] == ["p2@example.com"]
    r = klaviyo.get("/api/profiles", params={"filter": "equals(email,p1@example.com)"})
    assert r.status_code == 400 and r.json()["errors"][0]["source"]["parameter"] == "filter"
    assert klaviyo.get("/api/profiles", params={"filter": 'equals(first_name,"x")'}).status_code == 400
    assert klaviyo.get("/api/profiles", params={"page[size]": "101"}).status_code == 400
    assert klaviyo.get("/api/profiles", params={"page[size]": "0"}).status_code == 400
    seen, url = [], "/api/profiles?page[size]=2"
    while url:
        page = klaviyo.get(url).json()
        assert len(page["data"]) <= 2
        seen += [p["id"] for p in page["data"]]
        url = page["links"].get("next")  # absent on the last page, as in the spec
    assert len(seen) == len(set(seen)) == 5


def test_additional_fields_subscriptions(klaviyo: httpx.Client) -> None:
    klaviyo.post("/api/profiles", json=profile(email="s@example.com"))
    plain = klaviyo.get("/api/profiles").json()["data"][0]["attributes"]
    assert "subscriptions" not in plain
    r = klaviyo.get("/api/profiles", params={"additional-fields[profile]": "subscriptions"})
    subs = r.json()["data"][0]["attributes"]["subscriptions"]
    assert subs["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
