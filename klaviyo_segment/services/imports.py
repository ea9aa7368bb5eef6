"""Bulk profile import jobs: submit, poll to an end state, map per-profile errors back to the input.

Backfill drives :func:`submit_import_job`/:func:`await_import_job` itself (it records job ids to resume);
flows use :func:`bulk_import_profiles`, which chunks, validates and waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from klaviyo_segment import constants
from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.errors import ApiError, KlaviyoAPIError
from klaviyo_segment.outcomes import ItemResult
from klaviyo_segment.services.bulk import (
    CredentialsOrClient,
    client_scope,
    error_of,
    failed,
    invalid,
    ordered,
    pointer_index,
    prevalidate,
    run_logger,
)

_IMPORT_POINTER = r"/profiles/data/(\d+)"


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


async def submit_import_job(
    client: KlaviyoClient, items: Sequence[Mapping[str, Any]], list_ids: Sequence[str] = ()
) -> str:
    """Submit one bulk profile import job; its id is returned at once (callers may record it to resume)."""
    response = await client.request("bulk_import_profiles", json=b.bulk_profile_import_body(items, list_ids=list_ids))
    return str((response.json().get("data") or {}).get("id"))


async def await_import_job(
    client: KlaviyoClient,
    job_id: str,
    items: Sequence[Mapping[str, Any]],
    *,
    poll_interval: float = 2.0,
    timeout: float = 900.0,
) -> tuple[str, dict[int, ApiError]]:
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
        async for page in client.paginate(
            "get_errors_for_bulk_import_profiles_job", {"page[size]": 100}, path_params={"id": job_id}
        ):
            for err in page.get("data") or []:
                a = err.get("attributes") or {}
                api_error = ApiError(
                    code=a.get("code"),
                    title=a.get("title"),
                    detail=a.get("detail"),
                    pointer=(a.get("source") or {}).get("pointer"),
                )
                for pos in import_error_labels(err, items):
                    errors.setdefault(pos, api_error)
    return status, errors


async def run_import_job(
    client: KlaviyoClient, items: list[Mapping[str, Any]], list_ids: Sequence[str], poll_interval: float, timeout: float
) -> tuple[str | None, dict[int, ApiError]]:
    """Submit one job, poll it and return (job id, errors by chunk position); a job that timed out or was
    cancelled fails every item in it."""
    job_id = await submit_import_job(client, items, list_ids)
    status, errors = await await_import_job(client, job_id, items, poll_interval=poll_interval, timeout=timeout)
    if status == "timeout":
        err = ApiError(code="job_timeout", detail=f"bulk import job {job_id} did not finish within {timeout}s")
        return job_id, {i: err for i in range(len(items))}
    if status == "cancelled":
        err = ApiError(code="job_cancelled", detail=f"bulk import job {job_id} was cancelled")
        return job_id, {i: err for i in range(len(items))}
    return job_id, errors


async def bulk_import_profiles(
    profiles: Sequence[Mapping[str, Any]],
    credentials: CredentialsOrClient,
    *,
    list_ids: Sequence[str] = (),
    poll_interval: float = 2.0,
    timeout: float = 900.0,
) -> list[ItemResult]:
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
                job_id, errors = await run_import_job(client, items, list_ids, poll_interval, timeout)
            except KlaviyoAPIError as exc:
                results.update({i: failed(i, error_of(exc)) for i in labels})
                continue
            for pos, label in enumerate(labels):
                results[label] = (
                    failed(label, errors[pos])
                    if pos in errors
                    else ItemResult(index=label, ok=True, value={"job_id": job_id})
                )
            run_logger().info("bulk import job %s: %d profiles, %d errors", job_id, len(labels), len(errors))
    return ordered(results, len(profiles))
