"""Identity resolution against the emulator: batched lookups, cache plug-in, E.164, and the conflict/merge
policy."""

from __future__ import annotations

import httpx
from prefect.logging import disable_run_logger

from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.services import identity as identity_service
from klaviyo_segment.tasks import identity as idt
from tests.tasks.conftest import create_profile, requests_to, sandbox_profiles


async def test_resolve_conflict_not_found_anonymous_and_cache(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    p_ext = create_profile(klaviyo, external_id="u1")
    p_mail = create_profile(klaviyo, email="ann@x.io", phone_number="+14155552671")
    cache = identity_service.MemoryIdentityCache()
    identities = [
        {"email": " Ann@X.io ", "userId": "u1"},  # two different profiles -> conflict
        {"phone": "(415) 555-2671"},  # E.164 with the default region -> p_mail
        {"email": "nobody@x.io"},
        {"anonymous_id": "anon-1"},
        {"phone": "12", "user_id": "u1"},  # bad phone dropped with a warning
    ]
    with disable_run_logger():
        out = await idt.resolve_identities.fn(identities, client, cache=cache)
    assert not out[0].ok and out[0].error.code == "identity_conflict"
    assert out[0].error.meta["profile_ids"] == {"external_id": p_ext, "email": p_mail}
    assert out[1].value["profile_id"] == p_mail and out[1].value["identifiers"]["phone_number"] == "+14155552671"
    assert out[2].value["status"] == "not_found" and out[3].value["status"] == "anonymous_only"
    assert out[4].value["profile_id"] == p_ext and out[4].value["warnings"] == ["phone_unparseable"]
    assert requests_to(klaviyo, "get_profiles") == 3  # one batched call per identifier field
    assert requests_to(klaviyo, "merge_profiles") == 0
    assert cache.data["email:ann@x.io"] == p_mail
    with disable_run_logger():
        again = await idt.resolve_identities.fn([{"email": "ann@x.io"}], client, cache=cache)
    assert again[0].value["profile_id"] == p_mail and requests_to(klaviyo, "get_profiles") == 3


async def test_merge_keeps_the_external_id_profile(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    p_ext = create_profile(klaviyo, external_id="u1")
    p_mail = create_profile(klaviyo, email="ann@x.io")
    with disable_run_logger():
        out = await idt.resolve_identities.fn([{"email": "ann@x.io", "userId": "u1"}], client, merge=True)
    assert out[0].ok and out[0].value["profile_id"] == p_ext and out[0].value["merged"] == [p_mail]
    profiles = sandbox_profiles(klaviyo)
    assert list(profiles) == [p_ext] and profiles[p_ext]["attributes"]["email"] == "ann@x.io"


def test_normalize_phone() -> None:
    assert identity_service.normalize_phone("020 7946 0958", "GB") == "+442079460958"
    assert identity_service.normalize_phone("+1 415-555-2671") == "+14155552671"
    assert identity_service.normalize_phone("not a phone") is None


async def test_stale_cached_id_is_forgotten_and_looked_up_again(klaviyo: httpx.Client, client: KlaviyoClient) -> None:
    """A merge done in Klaviyo leaves the cache on the source profile: not a conflict, and not forever."""
    live = create_profile(klaviyo, external_id="u7", email="seven@x.io")
    cache = identity_service.MemoryIdentityCache()
    cache.data.update({"external_id:u7": "01DEADPROFILE00000000000000"})
    with disable_run_logger():
        out = await idt.resolve_identities.fn([{"email": "seven@x.io", "userId": "u7"}], client, cache=cache)
    assert out[0].ok and out[0].value["profile_id"] == live
    assert cache.data["external_id:u7"] == live
    cache.data["external_id:u7"] = "01DEADPROFILE00000000000000"
    with disable_run_logger():  # deletions verify cached ids even without a second identifier to disagree
        checked = await idt.resolve_identities.fn([{"userId": "u7"}], client, cache=cache, verify_cached=True)
        refreshed = await identity_service.refresh_identities([{"userId": "u7"}], client, cache=cache)
    assert checked[0].value["profile_id"] == live and refreshed[0].value["profile_id"] == live
