"""JSON:API documents in Klaviyo's shapes, and the cursor pagination every GET list endpoint shares."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request

from klaviyo_segment.devkit.sandbox.klaviyo.state import AccountState, Event, ImportJob, KList, Metric, Profile
from klaviyo_segment.devkit.sandbox.klaviyo.validation import KlaviyoError

T = TypeVar("T")


def api_base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/api"


def profile_resource(
    profile: Profile, base: str, subscriptions: bool = False, joined_group_at: str | None = None
) -> dict[str, Any]:
    """A profile; ``joined_group_at`` is set for list members (Get List Profiles requires it)."""
    attrs = {k: v for k, v in profile.attrs.items() if k not in ("location", "properties")}
    attrs |= {
        "location": dict(profile.attrs["location"]),
        "properties": dict(profile.attrs["properties"]),
        "created": profile.created,
        "updated": profile.updated,
    }
    if profile.anonymous_ids:
        attrs["anonymous_id"] = sorted(profile.anonymous_ids)[0]
    if subscriptions:
        attrs["subscriptions"] = subscriptions_view(profile)
    if joined_group_at is not None:
        attrs["joined_group_at"] = joined_group_at
    self_link = f"{base}/profiles/{profile.id}/"
    return {
        "type": "profile",
        "id": profile.id,
        "attributes": attrs,
        "relationships": {
            "lists": {"links": {"self": f"{self_link}relationships/lists/", "related": f"{self_link}lists/"}}
        },
        "links": {"self": self_link},
    }


def subscriptions_view(profile: Profile) -> dict[str, Any]:
    """Consent per channel plus the derived can_receive flags Klaviyo reports."""
    email = dict(profile.subscriptions["email"]["marketing"])
    email["can_receive_email_marketing"] = (
        bool(profile.attrs.get("email")) and not email["suppression"] and email["consent"] != "UNSUBSCRIBED"
    )
    sms = dict(profile.subscriptions["sms"]["marketing"])
    sms["can_receive_sms_marketing"] = bool(profile.attrs.get("phone_number")) and sms["consent"] == "SUBSCRIBED"
    return {"email": {"marketing": email}, "sms": {"marketing": sms, "transactional": None}}


def event_resource(event: Event, base: str) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(event.timestamp, UTC).isoformat()
    return {
        "type": "event",
        "id": event.id,
        "attributes": {
            "timestamp": event.timestamp,
            "event_properties": event.properties,
            "datetime": stamp,
            "uuid": event.uuid,
        },
        "relationships": {
            name: {
                "data": {"type": name, "id": ref},
                "links": {
                    "self": f"{base}/events/{event.id}/relationships/{name}/",
                    "related": f"{base}/events/{event.id}/{name}/",
                },
            }
            for name, ref in (("profile", event.profile_id), ("metric", event.metric_id))
        },
        "links": {"self": f"{base}/events/{event.id}/"},
    }


def metric_resource(metric: Metric, base: str) -> dict[str, Any]:
    category = "Internal" if metric.integration == "Klaviyo" else "API"
    return {
        "type": "metric",
        "id": metric.id,
        "attributes": {
            "name": metric.name,
            "created": metric.created,
            "updated": metric.created,
            "integration": {
                "object": "integration",
                "id": metric.integration.lower(),
                "key": metric.integration.lower(),
                "name": metric.integration,
                "category": category,
            },
        },
        "links": {"self": f"{base}/metrics/{metric.id}/"},
    }


def list_resource(klist: KList, base: str) -> dict[str, Any]:
    return {
        "type": "list",
        "id": klist.id,
        "attributes": {
            "name": klist.name,
            "created": klist.created,
            "updated": klist.updated,
            "opt_in_process": klist.opt_in_process,
        },
        "links": {"self": f"{base}/lists/{klist.id}/"},
    }


def job_resource(job: ImportJob, base: str) -> dict[str, Any]:
    return {
        "type": "profile-bulk-import-job",
        "id": job.id,
        "attributes": {
            "status": job.status,
            "created_at": job.created_at,
            "total_count": len(job.profiles),
            "completed_count": job.completed_count,
            "failed_count": job.failed_count,
            "completed_at": job.completed_at,
            "expires_at": None,
            "started_at": job.started_at,
        },
        "relationships": {"lists": {"data": [{"type": "list", "id": i} for i in job.list_ids]}},
        "links": {"self": f"{base}/profile-bulk-import-jobs/{job.id}/"},
    }


def account_resource(account_id: str, public_key: str, base: str) -> dict[str, Any]:
    return {
        "type": "account",
        "id": account_id,
        "attributes": {
            "test_account": True,
            "public_api_key": public_key,
            "locale": "en-US",
            "timezone": "UTC",
            "preferred_currency": "USD",
            "industry": None,
            "contact_information": {
                "default_sender_name": "Sandbox",
                "default_sender_email": "sandbox@example.com",
                "website_url": "https://example.com",
                "organization_name": "Klaviyo Sandbox",
                "street_address": {
                    "address1": "1 Sandbox Way",
                    "address2": None,
                    "city": "Boston",
                    "region": "MA",
                    "country": "US",
                    "zip": "02108",
                },
            },
        },
        "links": {"self": f"{base}/accounts/{account_id}/"},
    }


def page_size(request: Request, default: int, maximum: int, cap: int | None = None) -> int:
    """``page[size]`` outside 1..maximum is a 400; ``cap`` silently limits sizes the schema allows."""
    raw = request.query_params.get("page[size]")
    if raw is None:
        return min(default, cap or default)
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= maximum:
        raise KlaviyoError(
            400, "invalid", f"Page size must be an integer between 1 and {maximum}.", parameter="page[size]"
        )
    return min(size, cap) if cap else size


def paginate(request: Request, items: Sequence[T], size: int) -> tuple[list[T], dict[str, Any]]:
    """Opaque cursor = offset; ``links.next`` is the full URL to follow, as Klaviyo's SDKs expect."""
    raw = request.query_params.get("page[cursor]")
    offset = 0
    if raw:
        try:
            offset = int(base64.urlsafe_b64decode(raw.encode() + b"==").decode())
        except (ValueError, UnicodeDecodeError):
            raise KlaviyoError(400, "invalid", "Invalid page cursor.", parameter="page[cursor]") from None
    chunk = list(items[offset : offset + size])
    params = dict(request.query_params)
    # The spec types next/prev as strings (not nullable): absent links are left out, never null.
    links: dict[str, Any] = {"self": str(request.url)}
    if offset + size < len(items):
        params["page[cursor]"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode().rstrip("=")
        links["next"] = f"{str(request.url).split('?')[0]}?{urlencode(params)}"
    return chunk, links


def wants_subscriptions(request: Request) -> bool:
    return "subscriptions" in request.query_params.get("additional-fields[profile]", "").split(",")


def included_for_events(state: AccountState, events: list[Event], include: str, base: str) -> list[dict[str, Any]]:
    """``include=metric,profile`` side-loads each related resource once."""
    wanted, out, seen = set(include.split(",")) if include else set(), [], set()
    for event in events:
        if "metric" in wanted and ("metric", event.metric_id) not in seen and event.metric_id in state.metrics:
            seen.add(("metric", event.metric_id))
            out.append(metric_resource(state.metrics[event.metric_id], base))
        if "profile" in wanted and ("profile", event.profile_id) not in seen and event.profile_id in state.profiles:
            seen.add(("profile", event.profile_id))
            out.append(profile_resource(state.profiles[event.profile_id], base))
    return out
