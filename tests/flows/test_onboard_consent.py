"""onboard-new-users consent safety (issue 14 section A): opt-outs made BEFORE the sign-up, naive consent
timestamps from Klaviyo, SMS-only sign-ups on the bulk path, and the optional explicit email consent trait.
Sandbox state is seeded through the API (unsubscribe jobs, spam reports) or, for values the API never produces
(a timestamp without an offset), directly in the emulator's state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from klaviyo_segment.flows.onboard_new_users import onboard_new_users


@pytest.fixture
def env(flow_env: Any) -> httpx.Client:
    return flow_env.http


def make_list(env: httpx.Client) -> str:
    r = env.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "Onboarding"}}})
    r.raise_for_status()
    return str(r.json()["data"]["id"])


def signup(mid: str, user: str, at: datetime | None = None, with_email: bool = True, **traits: Any) -> dict[str, Any]:
    at = at or datetime.now(UTC)
    context_traits = {"email": f"{user}@example.com"} if with_email else {}
    return {
        "type": "track",
        "messageId": mid,
        "userId": user,
        "event": "Signed Up",
        "timestamp": at.isoformat(),
        "properties": {},
        "context": {"traits": {**context_traits, **traits}},
    }


def unsubscribe(
    env: httpx.Client, *, email: str | None = None, phone: str | None = None, list_id: str | None = None
) -> None:
    attrs: dict[str, Any] = {"subscriptions": {}}
    if email:
        attrs["email"] = email
        attrs["subscriptions"]["email"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
    if phone:
        attrs["phone_number"] = phone
        attrs["subscriptions"]["sms"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": [{"type": "profile", "attributes": attrs}]}},
    }
    if list_id:  # a member of the list gets a list suppression instead of a global unsubscribe
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    r = env.post("/api/profile-subscription-bulk-delete-jobs", json={"data": data})
    assert r.status_code == 202, r.text


def create_profile(env: httpx.Client, **attrs: Any) -> str:
    r = env.post("/api/profiles", json={"data": {"type": "profile", "attributes": attrs}})
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def marketing(env: httpx.Client, channel: str, **attrs: Any) -> dict[str, Any]:
    found = [
        p for p in env.get("/__sandbox/profiles").json() if all(p["attributes"].get(k) == v for k, v in attrs.items())
    ]
    assert len(found) == 1, found
    return found[0]["attributes"]["subscriptions"][channel]["marketing"]


async def test_opt_outs_before_signup_are_never_resubscribed(env: httpx.Client, by_id: Any) -> None:
    """Item 1: unsubscribed / spam-reported / list-suppressed BEFORE the sign-up: skipped, opt-out kept."""
    list_id = make_list(env)
    unsubscribe(env, email="uma@example.com")
    create_profile(env, email="sam@example.com")
    r = env.post(
        "/__sandbox/engagement", json={"events": [{"metric": "Marked Email as Spam", "email": "sam@example.com"}]}
    )
    assert r.status_code < 300, r.text
    create_profile(env, email="liz@example.com")
    subscribed = await onboard_new_users(messages=[signup("liz0", "liz")], config={"onboarding": {"list_id": list_id}})
    assert subscribed["sent"] == 1
    unsubscribe(env, email="liz@example.com", list_id=list_id)  # now in the list: a list suppression (USER_SUPPRESSED)
    later = datetime.now(UTC) + timedelta(milliseconds=5)  # strictly after every opt-out above
    messages = [
        signup("uma1", "uma", at=later),
        signup("sam1", "sam", at=later),
        signup("liz1", "liz-second-account", at=later, with_email=False, email="liz@example.com"),
        signup("new1", "neo", at=later),
    ]
    result = await onboard_new_users(messages=messages, config={"onboarding": {"list_id": list_id}})
    out = by_id(result)
    assert out["uma1"]["status"] == "skipped" and "unsubscribed" in out["uma1"]["reason"], out["uma1"]
    assert out["sam1"]["status"] == "skipped" and "suppressed" in out["sam1"]["reason"], out["sam1"]
    assert out["liz1"]["status"] == "skipped" and "suppressed" in out["liz1"]["reason"], out["liz1"]
    assert out["new1"]["status"] == "sent"  # default rule: a qualifying sign-up subscribes someone who never opted out
    assert marketing(env, "email", email="uma@example.com")["consent"] == "UNSUBSCRIBED"
    assert [s["reason"] for s in marketing(env, "email", email="sam@example.com")["suppression"]] == ["SPAM_REPORT"]
    assert [s["list_id"] for s in marketing(env, "email", email="liz@example.com")["list_suppressions"]] == [list_id]
    assert marketing(env, "email", email="neo@example.com")["consent"] == "SUBSCRIBED"


async def test_naive_consent_timestamp_does_not_fail_the_batch(env: httpx.Client, sandbox: Any, by_id: Any) -> None:
    """Item 2: Klaviyo state with times without an offset (read as UTC) must not raise TypeError for the batch."""
    list_id = make_list(env)
    pid = create_profile(env, email="nia@example.com")
    state = sandbox.klaviyo_app.state.core.state
    email = state.profiles[pid].subscriptions["email"]["marketing"]
    email["suppression"].append({"reason": "USER_SUPPRESSED", "timestamp": "2020-01-01T00:00:00"})
    email.update(consent="UNSUBSCRIBED", consent_timestamp="2020-01-01T00:00:00", last_updated="2020-01-01T00:00:00")
    result = await onboard_new_users(
        messages=[signup("nia1", "nia"), signup("ola1", "ola")], config={"onboarding": {"list_id": list_id}}
    )
    out = by_id(result)
    assert out["nia1"]["status"] == "skipped", out["nia1"]
    assert out["ola1"]["status"] == "sent", out["ola1"]
    assert marketing(env, "email", email="nia@example.com")["consent"] == "UNSUBSCRIBED"


async def test_bulk_path_reads_sms_consent_by_phone(env: httpx.Client, by_id: Any) -> None:
    """Item 3: >= 100 sign-ups (bulk import, no profile ids): an SMS-only sign-up whose phone unsubscribed from
    SMS is looked up by phone and skipped, not re-subscribed."""
    list_id = make_list(env)
    phone = "+14155550199"
    unsubscribe(env, phone=phone)
    messages = [signup(f"b{i}", f"bulk{i}") for i in range(100)]
    messages.append(signup("sms1", "smsonly", with_email=False, phone=phone, sms_consent=True))
    result = await onboard_new_users(messages=messages, config={"onboarding": {"list_id": list_id}})
    out = by_id(result)
    assert out["sms1"]["status"] == "skipped" and "unsubscribed" in out["sms1"]["reason"], out["sms1"]
    assert sum(1 for o in out.values() if o["status"] == "sent") == 100
    assert marketing(env, "sms", phone_number=phone)["consent"] == "UNSUBSCRIBED"


async def test_email_consent_trait_makes_consent_explicit(env: httpx.Client, by_id: Any) -> None:
    """Item 1 (option): with ``onboarding.email_consent_trait`` only a sign-up stating consent subscribes email."""
    list_id = make_list(env)
    config = {"onboarding": {"list_id": list_id, "email_consent_trait": "email_consent"}}
    result = await onboard_new_users(
        messages=[
            signup("yes", "pia", email_consent=True),
            signup("no", "quin"),
            signup("false", "rob", email_consent=False),
        ],
        config=config,
    )
    out = by_id(result)
    assert out["yes"]["status"] == "sent"
    assert out["no"]["status"] == "skipped" and out["no"]["reason"] == "no email consent", out["no"]
    assert out["false"]["status"] == "skipped" and out["false"]["reason"] == "no email consent"
    assert marketing(env, "email", email="pia@example.com")["consent"] == "SUBSCRIBED"
    assert not [
        p
        for p in env.get("/__sandbox/profiles").json()
        if p["attributes"].get("email") in ("quin@example.com", "rob@example.com")
        and p["attributes"]["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    ]
