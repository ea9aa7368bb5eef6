"""Identity resolution: batched lookups, cache plug-in, E.164, and the conflict/merge policy."""

from __future__ import annotations

from typing import Any

from prefect.logging import disable_run_logger

from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.tasks import identity as idt
from tests.tasks.fake_klaviyo import FakeKlaviyo

PROFILES = [
    {"id": "P-ext", "attributes": {"external_id": "u1", "email": None, "phone_number": None}},
    {"id": "P-mail", "attributes": {"external_id": None, "email": "ann@x.io", "phone_number": "+14155552671"}},
]


def lookup(query: dict[str, str], _: Any) -> tuple[int, Any]:
    f = query["filter"]
    field = f[4:f.index(",")]
    return 200, {"data": [p for p in PROFILES if p["attributes"].get(field) and f'"{p["attributes"][field]}"' in f]}


async def test_resolve_conflict_not_found_anonymous_and_cache(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    fake.on("GET", "/api/profiles", lookup)
    cache = idt.MemoryIdentityCache()
    identities = [
        {"email": " Ann@X.io ", "userId": "u1"},  # two different profiles -> conflict
        {"phone": "(415) 555-2671"},  # E.164 with the default region -> P-mail
        {"email": "nobody@x.io"},
        {"anonymous_id": "anon-1"},
        {"phone": "12", "user_id": "u1"},  # bad phone dropped with a warning
    ]
    with disable_run_logger():
        out = await idt.resolve_identities.fn(identities, client, cache=cache)
    assert not out[0].ok and out[0].error.code == "identity_conflict"
    assert out[0].error.meta["profile_ids"] == {"external_id": "P-ext", "email": "P-mail"}
    assert out[1].value["profile_id"] == "P-mail" and out[1].value["identifiers"]["phone_number"] == "+14155552671"
    assert out[2].value["status"] == "not_found" and out[3].value["status"] == "anonymous_only"
    assert out[4].value["profile_id"] == "P-ext" and out[4].value["warnings"] == ["phone_unparseable"]
    assert len(fake.calls("GET", "/api/profiles")) == 3  # one batched call per identifier field
    assert not fake.calls("POST", "/api/profile-merge")
    assert cache.data["email:ann@x.io"] == "P-mail"
    with disable_run_logger():
        again = await idt.resolve_identities.fn([{"email": "ann@x.io"}], client, cache=cache)
    assert again[0].value["profile_id"] == "P-mail" and len(fake.calls("GET", "/api/profiles")) == 3


async def test_merge_keeps_the_external_id_profile(fake: FakeKlaviyo, client: KlaviyoClient) -> None:
    fake.on("GET", "/api/profiles", lookup)
    fake.on("POST", "/api/profile-merge", lambda q, b: (202, None))
    with disable_run_logger():
        out = await idt.resolve_identities.fn([{"email": "ann@x.io", "userId": "u1"}], client, merge=True)
    assert out[0].ok and out[0].value["profile_id"] == "P-ext" and out[0].value["merged"] == ["P-mail"]
    body = fake.calls("POST", "/api/profile-merge")[0].body
    assert body["data"]["id"] == "P-ext" and body["data"]["relationships"]["profiles"]["data"][0]["id"] == "P-mail"


def test_normalize_phone() -> None:
    assert idt.normalize_phone("020 7946 0958", "GB") == "+442079460958"
    assert idt.normalize_phone("+1 415-555-2671") == "+14155552671"
    assert idt.normalize_phone("not a phone") is None
