"""The emulator finds a profile by identifier through an index (not a scan of every profile); the index must
never answer with a profile that no longer holds the identifier."""

from __future__ import annotations

from klaviyo_segment.devkit.sandbox.klaviyo.state import AccountState


def _profile(email: str, **attrs: str) -> dict:
    return {"type": "profile", "attributes": {"email": email, **attrs}}


def test_changed_identifier_moves_with_its_profile() -> None:
    state = AccountState()
    first, _ = state.upsert_profile(_profile("a@example.com", external_id="u1"))
    state.update_profile(first.id, {"type": "profile", "id": first.id, "attributes": {"email": "b@example.com"}})
    assert state.owner("email", "a@example.com") is None
    assert state.owner("email", "b@example.com") is first
    second, created = state.upsert_profile(_profile("a@example.com"))
    assert created and second is not first and state.owner("email", "a@example.com") is second


def test_deleted_and_merged_profiles_are_not_found_by_their_old_identifiers() -> None:
    state = AccountState()
    kept, _ = state.upsert_profile(_profile("keep@example.com", external_id="k"))
    gone, _ = state.upsert_profile(_profile("gone@example.com", external_id="g"))
    state.resolve_event_profile(
        {"type": "profile", "attributes": {"anonymous_id": "anon-1", "email": "gone@example.com"}}
    )
    assert state.owner("anonymous_id", "anon-1") is gone
    state.merge(kept.id, [gone.id])
    assert state.owner("anonymous_id", "anon-1") is kept  # the merged profile's ids follow it
    assert state.owner("external_id", "g") is None or state.owner("external_id", "g") is kept
    assert state.delete_profile(kept.id, {})
    assert state.owner("email", "keep@example.com") is None and state.owner("anonymous_id", "anon-1") is None
