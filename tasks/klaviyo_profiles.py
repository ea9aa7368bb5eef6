"""Profile tasks: upsert, bulk import job, lookup by identifiers, consent state, merge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task

from klaviyo_segment import constants
from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.errors import ApiError, KlaviyoAPIError
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.tasks._common import (
    TASK_OPTIONS, CredentialsOrClient, client_scope, error_of, failed, gather_limited, invalid, ordered, pointer_index,
    prevalidate, run_logger,
)

_IMPORT_POINTER = r"/profiles/data/(\d+)"
#: Values per ``any()`` filter: one page (100) answers the whole chunk, and the URL stays well under 8 KB.
LOOKUP_CHUNK = 100
LOOKUP_URL_BUDGET = 6000


async def _upsert_one(client: KlaviyoClient, index: int, item: Mapping[str, Any]) -> ItemResult:
    attrs = {k: v for k, v in item.items() if k not in ("id", "meta")}
    try:
        body = b.profile_import_body(attrs, profile_id=item.get("id"), meta=item.get("meta"))
    except (ValueError, TypeError) as exc:
        return invalid(index, exc)
    if b.json_size(body) > constants.PROFILE_PAYLOAD_MAX_BYTES:
        return invalid(index, ValueError("profile: payload exceeds Klaviyo's 100 KB limit"))
    try:
        response = await client.request("create_or_update_profile", json=body)
    except KlaviyoAPIError as exc:
        err = error_of(exc)
        dup = err.meta.get("duplicate_profile_id") if err.code == "duplicate_profile" else None
        return ItemResult(index=index, ok=False, error=err, value={"duplicate_profile_id": dup} if dup else None)
    data = response.json().get("data") or {}
    return ItemResult(index=index, ok=True, value={"id": data.get("id"), "created": response.status_code == 201})


@task(name="klaviyo-upsert-profiles", **TASK_OPTIONS)
async def upsert_profiles(profiles: Sequence[Mapping[str, Any]], credentials: CredentialsOrClient, *,
                          concurrency: int = 8) -> list[ItemResult]:
    """``profile-import`` per profile (items: attributes plus optional ``id``/``meta``).

    ok -> ``value={"id", "created"}``. A 409 ``duplicate_profile`` (identifiers owned by different profiles) is
    a failure whose ``value`` carries ``duplicate_profile_id`` for the identity policy to act on.
    """
    async with client_scope(credentials) as client:
        return await gather_limited([lambda i=i, p=p: _upsert_one(client, i, p) for i, p in enumerate(profiles)],
                                    concurrency)


def import_error_labels(err: Mapping[str, Any], chunk_items: Sequence[Mapping[str, Any]]) -> list[int]:
    """Positions inside the chunk an import error is about: by pointer, else by the echoed identifiers."""
    attrs = err.get("attributes") or {}
    idx = pointer_index((attrs.get("source") or {}).get("pointer"), _IMPORT_POINTER)
    if idx is not None and idx < len(chunk_items):
        return [idx]
    payload = attrs.get("original_payload") or {}
    payload = payload.get("attributes", payload) if isinstance(payload, Mapping) else {}
    for key in ("email", "phone_number", "external_id"):
        if payload.get(key):
            hits = [i for i, p in enumerate(chunk_items) if p.get(key) == payload[key]]
            if hits:
                return hits
    return []


async def submit_import_job(client: KlaviyoClient, items: Sequence[Mapping[str, Any]],
                            list_ids: Sequence[str] = ()) -> str:
    """Submit one bulk profile import job; its id is returned at once (callers may record it to resume)."""
    response = await client.request("bulk_import_profiles", json=b.bulk_profile_import_body(items, list_ids=list_ids))
    return str((response.json().get("data") or {}).get("id"))


async def await_import_job(client: KlaviyoClient, job_id: str, items: Sequence[Mapping[str, Any]], *,
                           poll_interval: float = 2.0, timeout: float = 900.0) -> tuple[str, dict[int, ApiError]]:
    """Poll a job to an end state: (status, errors by position in ``items``); status is ``complete``,
    ``cancelled`` or ``timeout``. Polls start fast and back off to ``poll_interval`` (small jobs finish in
    well under a second; large ones must not spend the endpoint's 10/s budget on polls)."""
    deadline = time.monotonic() + timeout
    delay = min(0.05, poll_interval)
    while True:
        job = (await client.request("get_bulk_import_profiles_job", path_params={"job_id": job_id})).json()
        attrs = (job.get("data") or {}).get("attributes") or {}
        status = attrs.get("status", "queued")
        if status in ("complete", "cancelled"):
            break
        if time.monotonic() >= deadline:
            return "timeout", {}
        await asyncio.sleep(delay)
        delay = min(poll_interval, delay * 2)
    errors: dict[int, ApiError] = {}
    if status == "complete" and attrs.get("failed_count", 1):
        async for page in client.paginate("get_errors_for_bulk_import_profiles_job", {"page[size]": 100},
                                          path_params={"id": job_id}):
            for err in page.get("data") or []:
                a = err.get("attributes") or {}
                api_error = ApiError(code=a.get("code"), title=a.get("title"), detail=a.get("detail"),
                                     pointer=(a.get("source") or {}).get("pointer"))
                for pos in import_error_labels(err, items):
                    errors.setdefault(pos, api_error)
    return status, errors


async def _run_import_job(client: KlaviyoClient, items: list[Mapping[str, Any]], list_ids: Sequence[str],
                          poll_interval: float, timeout: float) -> tuple[str | None, dict[int, ApiError]]:
    """Submit one job, poll it and return (job id, errors by chunk position)."""
    job_id = await submit_import_job(client, items, list_ids)
    status, errors = await await_import_job(client, job_id, items, poll_interval=poll_interval, timeout=timeout)
    if status == "timeout":
        err = ApiError(code="job_timeout", detail=f"bulk import job {job_id} did not finish within {timeout}s")
        return job_id, {i: err for i in range(len(items))}
    if status == "cancelled":
        err = ApiError(code="job_cancelled", detail=f"bulk import job {job_id} was cancelled")
        return job_id, {i: err for i in range(len(items))}
    return job_id, errors


@task(name="klaviyo-bulk-import-profiles", **TASK_OPTIONS)
async def bulk_import_profiles(profiles: Sequence[Mapping[str, Any]], credentials: CredentialsOrClient, *,
                               list_ids: Sequence[str] = (), poll_interval: float = 2.0,
                               timeout: float = 900.0) -> list[ItemResult]:
    """Bulk profile import jobs (<=10,000 profiles, <=5 MB each), polled to completion; per-profile errors are
    fetched from ``import-errors`` and mapped back to the input. ok -> ``value={"job_id"}``."""
    good, results = prevalidate(profiles, lambda p: b.bulk_profile_import_body([p]))
    oversized = [i for i in good if b.json_size(profiles[i]) > constants.PROFILE_PAYLOAD_MAX_BYTES]
    for i in oversized:
        results[i] = invalid(i, ValueError("profile: payload exceeds Klaviyo's 100 KB limit"))
    good = [i for i in good if i not in set(oversized)]
    chunks, _ = b.chunk([profiles[i] for i in good], max_count=constants.BULK_PROFILE_IMPORT_MAX)
    async with client_scope(credentials) as client:
        for positions in chunks:
            labels = [good[p] for p in positions]
            items = [profiles[i] for i in labels]
            try:
                job_id, errors = await _run_import_job(client, items, list_ids, poll_interval, timeout)
            except KlaviyoAPIError as exc:
                results.update({i: failed(i, error_of(exc)) for i in labels})
                continue
            for pos, label in enumerate(labels):
                results[label] = (failed(label, errors[pos]) if pos in errors
                                  else ItemResult(index=label, ok=True, value={"job_id": job_id}))
            run_logger().info("bulk import job %s: %d profiles, %d errors", job_id, len(labels), len(errors))
    return ordered(results, len(profiles))


def lookup_chunks(values: Sequence[str]) -> list[list[str]]:
    """Unique values split so each ``any()`` filter fits one page and a sane URL length."""
    unique = list(dict.fromkeys(v for v in values if v))
    chunks, _ = b.chunk(unique, max_count=LOOKUP_CHUNK, max_bytes=LOOKUP_URL_BUDGET, envelope_bytes=0,
                        size_of=lambda v: len(b.quote_filter_value(v)) * 3)
    return [[unique[i] for i in c] for c in chunks]


def _match_key(field: str, value: Any) -> Any:
    return value.strip().lower() if field == "email" and isinstance(value, str) else value


async def find_profiles(client: KlaviyoClient, field: str, values: Sequence[str], *,
                        additional_fields: Sequence[str] = ()) -> dict[Any, dict[str, Any]]:
    """Profiles keyed by the (normalised) identifier value, in few calls; unknown values are simply absent."""
    found: dict[Any, dict[str, Any]] = {}
    for part in lookup_chunks(values):
        params = b.get_profiles_params(field, part, additional_fields=additional_fields)
        async for page in client.paginate("get_profiles", params):
            for profile in page.get("data") or []:
                value = profile.get("id") if field == "id" else (profile.get("attributes") or {}).get(field)
                if value is not None:
                    found.setdefault(_match_key(field, value), profile)
    return found


async def _lookup(values: Sequence[str], credentials: CredentialsOrClient, field: str,
                  additional_fields: Sequence[str]) -> list[ItemResult]:
    async with client_scope(credentials) as client:
        try:
            found = await find_profiles(client, field, values, additional_fields=additional_fields)
        except (KlaviyoAPIError, ValueError) as exc:
            err = error_of(exc) if isinstance(exc, KlaviyoAPIError) else ApiError(code="invalid_input",
                                                                                   detail=str(exc))
            return [failed(i, err) for i in range(len(values))]
    return [ItemResult(index=i, ok=True, value=found.get(_match_key(field, v))) for i, v in enumerate(values)]


@task(name="klaviyo-get-profiles", **TASK_OPTIONS)
async def get_profiles_by_identifiers(values: Sequence[str], credentials: CredentialsOrClient, *,
                                      field: str = "email",
                                      additional_fields: Sequence[str] = ()) -> list[ItemResult]:
    """Batched ``any(field,[...])`` lookups (email, phone_number, external_id or id), every page followed.
    ok -> ``value`` is the profile resource, or None when Klaviyo has no such profile."""
    return await _lookup(values, credentials, field, additional_fields)


@task(name="klaviyo-get-profile-consent", **TASK_OPTIONS)
async def get_profile_consent(values: Sequence[str], credentials: CredentialsOrClient, *,
                              field: str = "id") -> list[ItemResult]:
    """Consent state (``attributes.subscriptions``); read it before subscribing, since subscribe clears
    suppressions. ok -> ``value`` is the subscriptions object, or None for an unknown profile."""
    results = await _lookup(values, credentials, field, ("subscriptions",))
    for r in results:
        if r.ok and r.value is not None:
            r.value = (r.value.get("attributes") or {}).get("subscriptions")
    return results


@task(name="klaviyo-merge-profiles", **TASK_OPTIONS)
async def merge_profiles(pairs: Sequence[tuple[str, str]], credentials: CredentialsOrClient, *,
                         concurrency: int = 4) -> list[ItemResult]:
    """Merge each ``(destination_id, source_id)``; the source is deleted asynchronously by Klaviyo."""
    async def one(index: int, destination: str, source: str) -> ItemResult:
        try:
            body = b.merge_body(destination, source)
        except ValueError as exc:
            return invalid(index, exc)
        try:
            await client.request("merge_profiles", json=body)
        except KlaviyoAPIError as exc:
            return failed(index, error_of(exc))
        return ItemResult(index=index, ok=True, value={"id": destination, "merged": source})

    async with client_scope(credentials) as client:
        return await gather_limited([lambda i=i, p=p: one(i, p[0], p[1]) for i, p in enumerate(pairs)], concurrency)
