"""One handler per spec operation the project uses, each over :class:`AccountState`.

Handlers receive an already authenticated, scope-checked and schema-valid request (see app.py) and only add
the semantic rules the schema cannot express (uniqueness, unique_id de-duplication, list caps, consent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from klaviyo_segment.constants import (
    BULK_EVENTS_MAX,
    BULK_PROFILE_IMPORT_MAX,
    GET_EVENTS_PAGE_MAX,
    GET_LISTS_PAGE_MAX,
    GET_PROFILES_PAGE_MAX,
    LIST_MEMBERSHIP_MAX,
    SUBSCRIBE_MAX,
    UNSUBSCRIBE_MAX,
)
from klaviyo_segment.devkit.sandbox.klaviyo import filters
from klaviyo_segment.devkit.sandbox.klaviyo import resources as res
from klaviyo_segment.devkit.sandbox.klaviyo.state import (
    IDENTIFIERS,
    AccountState,
    ImportJob,
    KList,
    check_event_time,
    identifier_error,
    iso,
    now,
)
from klaviyo_segment.devkit.sandbox.klaviyo.validation import KlaviyoError, jsonapi


@dataclass
class Ctx:
    request: Request
    state: AccountState
    params: dict[str, str]
    body: Any
    filters: dict[str, Any] | None
    account_id: str
    public_key: str
    import_delay: float
    tasks: set[asyncio.Task[None]]

    @property
    def base(self) -> str:
        return res.api_base(self.request)

    @property
    def data(self) -> Any:
        return (self.body or {}).get("data")

    def parsed_filter(self) -> list[filters.Call]:
        text = self.request.query_params.get("filter")
        if not text:
            return []
        try:
            return filters.parse(text, self.filters)
        except filters.FilterError as exc:
            raise KlaviyoError(400, "invalid", str(exc), parameter="filter") from None


def accepted() -> Response:
    return Response(status_code=202)


def _too_many(count: int, maximum: int, pointer: str) -> None:
    if count > maximum:
        raise KlaviyoError(
            400, "invalid", f"A maximum of {maximum} items is allowed per request; got {count}.", pointer=pointer
        )


def _profile_doc(ctx: Ctx, profile: Any, status: int) -> Response:
    return jsonapi(
        {
            "data": res.profile_resource(profile, ctx.base, res.wants_subscriptions(ctx.request)),
            "links": {"self": f"{ctx.base}/profiles/{profile.id}/"},
        },
        status,
    )


async def create_or_update_profile(ctx: Ctx) -> Response:
    profile, created = ctx.state.upsert_profile(ctx.data)
    return _profile_doc(ctx, profile, 201 if created else 200)


async def create_profile(ctx: Ctx) -> Response:
    return _profile_doc(ctx, ctx.state.create_profile(ctx.data), 201)


async def update_profile(ctx: Ctx) -> Response:
    return _profile_doc(ctx, ctx.state.update_profile(ctx.params["id"], ctx.data), 200)


async def get_profile(ctx: Ctx) -> Response:
    return _profile_doc(ctx, ctx.state.get_profile(ctx.params["id"]), 200)


def _profile_getter(ctx: Ctx, profile: Any, joined: str | None = None) -> Callable[[str], Any]:
    def get(name: str) -> Any:
        if name == "id":
            return profile.id
        if name in ("created", "updated"):
            return getattr(profile, name)
        if name == "joined_group_at":
            return joined
        if name.startswith("subscriptions.email.marketing."):
            rest = name.split(".")[3:]
            items = profile.subscriptions["email"]["marketing"][rest[0]]
            return [item.get(rest[1]) for item in items]
        return profile.attrs.get(name)

    return get


async def get_profiles(ctx: Ctx) -> Response:
    calls = ctx.parsed_filter()
    size = res.page_size(ctx.request, 20, GET_PROFILES_PAGE_MAX)
    found = [p for p in ctx.state.profiles.values() if filters.matches(calls, _profile_getter(ctx, p))]
    sort = ctx.request.query_params.get("sort", "")
    if sort.lstrip("-") in ("id", "created", "updated", "email"):
        key = sort.lstrip("-")
        found.sort(key=lambda p: str(getattr(p, key, None) or p.attrs.get(key) or ""), reverse=sort.startswith("-"))
    page, links = res.paginate(ctx.request, found, size)
    subs = res.wants_subscriptions(ctx.request)
    return jsonapi({"data": [res.profile_resource(p, ctx.base, subs) for p in page], "links": links})


async def merge_profiles(ctx: Ctx) -> Response:
    sources = [ref.get("id") for ref in ctx.data["relationships"]["profiles"]["data"]]
    profile = ctx.state.merge(ctx.data["id"], sources)
    link = f"{ctx.base}/profiles/{profile.id}/"
    return jsonapi({"data": {"type": "profile", "id": profile.id, "links": {"self": link}}}, 201)


def _check_event(attrs: dict[str, Any], pointer: str) -> None:
    check_event_time(attrs, f"{pointer}/time")
    profile_attrs = attrs["profile"]["data"].get("attributes") or {}
    if not (
        attrs["profile"]["data"].get("id") or any(profile_attrs.get(n) for n in (*IDENTIFIERS, "anonymous_id", "_kx"))
    ):
        raise KlaviyoError(
            400,
            "invalid",
            "One of 'id', 'email', 'phone_number', 'external_id', 'anonymous_id' "
            "or '_kx' is required to identify the profile.",
            pointer=f"{pointer}/profile/data",
        )
    error = identifier_error(profile_attrs, f"{pointer}/profile/data/attributes")
    if error:
        raise error


async def create_event(ctx: Ctx) -> Response:
    attrs = ctx.data["attributes"]
    _check_event(attrs, "/data/attributes")
    profile = ctx.state.resolve_event_profile(attrs["profile"]["data"])
    assert profile is not None
    ctx.state.add_event(profile, attrs["metric"]["data"]["attributes"]["name"], attrs)
    return accepted()


async def bulk_create_events(ctx: Ctx) -> Response:
    """All-or-nothing: a unique_id repeated inside the request (or, strict, already stored) fails it."""
    groups = ctx.data["attributes"]["events-bulk-create"]["data"]
    _too_many(
        sum(len(g["attributes"]["events"]["data"]) for g in groups),
        BULK_EVENTS_MAX,
        "/data/attributes/events-bulk-create/data",
    )
    seen: set[tuple[str, str, str]] = set()
    for gi, group in enumerate(groups):
        pointer = f"/data/attributes/events-bulk-create/data/{gi}/attributes"
        ref = group["attributes"]["profile"]["data"]
        existing = ctx.state.resolve_event_profile(ref, create=False) if _identified(ref) else None
        profile_key = existing.id if existing else repr(sorted((ref.get("attributes") or {}).items()))
        for ei, event in enumerate(group["attributes"]["events"]["data"]):
            attrs = event["attributes"] | {"profile": group["attributes"]["profile"]}
            _check_event(attrs, f"{pointer}/events/data/{ei}/attributes")
            key = ctx.state.event_key(profile_key, attrs["metric"]["data"]["attributes"]["name"], attrs)
            repeated = key in seen or (ctx.state.strict_bulk and key in ctx.state.event_keys)
            if repeated:
                raise KlaviyoError(
                    400,
                    "invalid",
                    "Duplicate unique_id for the same profile and metric; the request "
                    "failed and no events were processed.",
                    pointer=f"{pointer}/events/data/{ei}/attributes/unique_id",
                )
            seen.add(key)
    for group in groups:
        profile = ctx.state.resolve_event_profile(group["attributes"]["profile"]["data"])
        assert profile is not None
        for event in group["attributes"]["events"]["data"]:
            ctx.state.add_event(
                profile, event["attributes"]["metric"]["data"]["attributes"]["name"], event["attributes"]
            )
    return accepted()


def _identified(ref: dict[str, Any]) -> bool:
    attrs = ref.get("attributes") or {}
    return bool(ref.get("id") or any(attrs.get(n) for n in (*IDENTIFIERS, "anonymous_id")))


def _event_getter(ctx: Ctx, event: Any) -> Callable[[str], Any]:
    def get(name: str) -> Any:
        return {
            "metric_id": event.metric_id,
            "profile_id": event.profile_id,
            "timestamp": event.timestamp,
            "datetime": res.event_resource(event, "")["attributes"]["datetime"],
            "metric": event.metric_id if event.metric_id in ctx.state.metrics else None,
            "profile": event.profile_id if event.profile_id in ctx.state.profiles else None,
        }.get(name)

    return get


async def get_events(ctx: Ctx) -> Response:
    calls = ctx.parsed_filter()
    size = res.page_size(ctx.request, GET_EVENTS_PAGE_MAX, 1000, cap=GET_EVENTS_PAGE_MAX)
    found = [e for e in ctx.state.events.values() if filters.matches(calls, _event_getter(ctx, e))]
    sort = ctx.request.query_params.get("sort", "datetime")
    found.sort(key=lambda e: e.timestamp, reverse=sort.startswith("-"))
    page, links = res.paginate(ctx.request, found, size)
    doc: dict[str, Any] = {"data": [res.event_resource(e, ctx.base) for e in page], "links": links}
    include = ctx.request.query_params.get("include", "")
    if include:
        doc["included"] = res.included_for_events(ctx.state, page, include, ctx.base)
    return jsonapi(doc)


async def get_metrics(ctx: Ctx) -> Response:
    calls = ctx.parsed_filter()
    found = [
        m
        for m in ctx.state.metrics.values()
        if filters.matches(
            calls, lambda n, m=m: {"integration.name": m.integration, "integration.category": "API"}.get(n)
        )
    ]
    page, links = res.paginate(ctx.request, found, 200)
    return jsonapi({"data": [res.metric_resource(m, ctx.base) for m in page], "links": links})


async def create_list(ctx: Ctx) -> Response:
    attrs = ctx.data["attributes"]
    klist = ctx.state.create_list(attrs["name"], attrs.get("opt_in_process"))
    return jsonapi(
        {"data": res.list_resource(klist, ctx.base), "links": {"self": f"{ctx.base}/lists/{klist.id}/"}}, 201
    )


async def get_lists(ctx: Ctx) -> Response:
    calls = ctx.parsed_filter()
    size = res.page_size(ctx.request, GET_LISTS_PAGE_MAX, GET_LISTS_PAGE_MAX)
    found = [
        k
        for k in ctx.state.lists.values()
        if filters.matches(
            calls, lambda n, k=k: {"name": k.name, "id": k.id, "created": k.created, "updated": k.updated}.get(n)
        )
    ]
    page, links = res.paginate(ctx.request, found, size)
    return jsonapi({"data": [res.list_resource(k, ctx.base) for k in page], "links": links})


async def get_list(ctx: Ctx) -> Response:
    klist = ctx.state.get_list(ctx.params["id"])
    return jsonapi({"data": res.list_resource(klist, ctx.base), "links": {"self": f"{ctx.base}/lists/{klist.id}/"}})


async def get_profiles_for_list(ctx: Ctx) -> Response:
    klist = ctx.state.get_list(ctx.params["id"])
    calls = ctx.parsed_filter()
    size = res.page_size(ctx.request, 20, GET_PROFILES_PAGE_MAX)
    members = [(ctx.state.profiles[pid], joined) for pid, joined in klist.members.items() if pid in ctx.state.profiles]
    found = [(p, joined) for p, joined in members if filters.matches(calls, _profile_getter(ctx, p, joined))]
    page, links = res.paginate(ctx.request, found, size)
    subs = res.wants_subscriptions(ctx.request)
    return jsonapi({"data": [res.profile_resource(p, ctx.base, subs, joined) for p, joined in page], "links": links})


async def _membership(ctx: Ctx, add: bool) -> Response:
    _too_many(len(ctx.data), LIST_MEMBERSHIP_MAX, "/data")
    ctx.state.change_members(ctx.params["id"], ctx.data, add)
    return Response(status_code=204)


async def add_profiles_to_list(ctx: Ctx) -> Response:
    return await _membership(ctx, True)


async def remove_profiles_from_list(ctx: Ctx) -> Response:
    return await _membership(ctx, False)


def _subscription_targets(ctx: Ctx, maximum: int) -> tuple[list[dict[str, Any]], KList | None]:
    attrs = ctx.data["attributes"]
    profiles = attrs["profiles"]["data"]
    _too_many(len(profiles), maximum, "/data/attributes/profiles/data")
    list_ref = ((ctx.data.get("relationships") or {}).get("list") or {}).get("data")
    klist = ctx.state.get_list(list_ref["id"]) if list_ref else None
    for i, item in enumerate(profiles):
        pattrs = item["attributes"]
        pointer = f"/data/attributes/profiles/data/{i}/attributes"
        error = identifier_error(pattrs, pointer)
        if error:
            raise error
        subs = pattrs.get("subscriptions") or {}
        if subs.get("email") and not pattrs.get("email"):
            raise KlaviyoError(400, "invalid", "An email is required for email subscriptions.", pointer=pointer)
        if subs.get("sms") and not pattrs.get("phone_number"):
            raise KlaviyoError(400, "invalid", "A phone number is required for SMS subscriptions.", pointer=pointer)
        consented = (subs.get("email") or {}).get("marketing", {}) or {}
        if consented.get("consented_at") and not attrs.get("historical_import"):
            raise KlaviyoError(
                400,
                "invalid",
                "consented_at is only allowed with historical_import.",
                pointer=f"{pointer}/subscriptions/email/marketing/consented_at",
            )
    return profiles, klist


def _target_profile(ctx: Ctx, item: dict[str, Any]) -> Any:
    ref = {"id": item.get("id"), "attributes": {k: item["attributes"].get(k) for k in ("email", "phone_number")}}
    return ctx.state.resolve_event_profile(ref)


async def bulk_subscribe_profiles(ctx: Ctx) -> Response:
    profiles, klist = _subscription_targets(ctx, SUBSCRIBE_MAX)
    historical = bool(ctx.data["attributes"].get("historical_import"))
    for item in profiles:
        ctx.state.subscribe(_target_profile(ctx, item), item["attributes"]["subscriptions"], klist, historical)
    return accepted()


async def bulk_unsubscribe_profiles(ctx: Ctx) -> Response:
    profiles, klist = _subscription_targets(ctx, UNSUBSCRIBE_MAX)
    for item in profiles:
        ctx.state.unsubscribe(_target_profile(ctx, item), item["attributes"]["subscriptions"], klist)
    return accepted()


async def request_profile_deletion(ctx: Ctx) -> Response:
    ref = ctx.data["attributes"]["profile"]["data"]
    attrs = ref.get("attributes") or {}
    if not (ref.get("id") or attrs.get("email") or attrs.get("phone_number")):
        raise KlaviyoError(
            400, "invalid", "One of id, email or phone_number is required.", pointer="/data/attributes/profile/data"
        )
    ctx.state.delete_profile(ref.get("id"), attrs)
    return accepted()


async def get_accounts(ctx: Ctx) -> Response:
    return jsonapi(
        {
            "data": [res.account_resource(ctx.account_id, ctx.public_key, ctx.base)],
            "links": {"self": f"{ctx.base}/accounts/"},
        }
    )


async def bulk_import_profiles(ctx: Ctx) -> Response:
    profiles = ctx.data["attributes"]["profiles"]["data"]
    _too_many(len(profiles), BULK_PROFILE_IMPORT_MAX, "/data/attributes/profiles/data")
    list_refs = ((ctx.data.get("relationships") or {}).get("lists") or {}).get("data") or []
    for ref in list_refs:
        ctx.state.get_list(ref["id"])
    job = ImportJob(ctx.state.ulid(), profiles, [ref["id"] for ref in list_refs], iso(now()))
    ctx.state.jobs[job.id] = job
    task = asyncio.get_running_loop().create_task(_run_import(ctx.state, job, ctx.import_delay))
    ctx.tasks.add(task)
    task.add_done_callback(ctx.tasks.discard)
    return jsonapi({"data": res.job_resource(job, ctx.base)}, 202)


async def _run_import(state: AccountState, job: ImportJob, delay: float) -> None:
    """queued -> processing -> complete, like Klaviyo's asynchronous import (clients must poll)."""
    await asyncio.sleep(delay)
    job.status, job.started_at = "processing", iso(now())
    await asyncio.sleep(delay)
    for i, item in enumerate(job.profiles):
        if i and i % 250 == 0:
            await asyncio.sleep(0)  # a 10,000-profile job must not stall every other request
        try:
            profile, _ = state.upsert_profile(item)
        except KlaviyoError as exc:
            job.failed_count += 1
            pointer = (exc.pointer or "").replace("/data/", f"/data/attributes/profiles/data/{i}/", 1)
            job.errors.append(
                {
                    "type": "import-error",
                    "id": state.ulid(),
                    "attributes": {
                        "code": exc.code,
                        "title": "Invalid input.",
                        "detail": exc.detail,
                        "source": {"pointer": pointer},
                        "original_payload": item,
                    },
                }
            )
            continue
        job.completed_count += 1
        for list_id in job.list_ids:
            if list_id in state.lists:
                state.lists[list_id].members.setdefault(profile.id, iso(now()))
    job.status, job.completed_at = "complete", iso(now())


async def get_bulk_import_profiles_job(ctx: Ctx) -> Response:
    job = ctx.state.jobs.get(ctx.params["job_id"])
    if job is None:
        raise KlaviyoError(404, "not_found", f"Job {ctx.params['job_id']} does not exist.")
    return jsonapi({"data": res.job_resource(job, ctx.base)})


async def get_errors_for_bulk_import_profiles_job(ctx: Ctx) -> Response:
    job = ctx.state.jobs.get(ctx.params["id"])
    if job is None:
        raise KlaviyoError(404, "not_found", f"Job {ctx.params['id']} does not exist.")
    page, links = res.paginate(ctx.request, job.errors, res.page_size(ctx.request, 20, 100))
    return jsonapi({"data": page, "links": links})


Handler = Callable[[Ctx], Awaitable[Response]]
HANDLERS: dict[str, Handler] = {
    name: fn
    for name, fn in globals().items()
    if callable(fn)
    and not name.startswith("_")
    and name
    in {
        "create_or_update_profile",
        "create_profile",
        "update_profile",
        "get_profile",
        "get_profiles",
        "merge_profiles",
        "create_event",
        "bulk_create_events",
        "get_events",
        "get_metrics",
        "create_list",
        "get_lists",
        "get_list",
        "get_profiles_for_list",
        "add_profiles_to_list",
        "remove_profiles_from_list",
        "bulk_subscribe_profiles",
        "bulk_unsubscribe_profiles",
        "request_profile_deletion",
        "get_accounts",
        "bulk_import_profiles",
        "get_bulk_import_profiles_job",
        "get_errors_for_bulk_import_profiles_job",
    }
}
