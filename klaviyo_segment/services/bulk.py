"""Mechanics shared by the Klaviyo services: client scoping, per-item results, bounded concurrency and the
partial-failure resend of bulk requests."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.errors import ApiError, KlaviyoAPIError
from klaviyo_segment.outcomes import ItemResult

T = TypeVar("T")
CredentialsOrClient = KlaviyoCredentials | KlaviyoClient

#: Build a body for the given labels and return it with a resolver from an error pointer to affected labels.
Builder = Callable[[list[int]], tuple[Any, Callable[[str | None], list[int]]]]


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run, the module logger elsewhere (plain service calls, the CLI preview)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("klaviyo_segment.tasks")


@asynccontextmanager
async def client_scope(target: CredentialsOrClient) -> AsyncIterator[KlaviyoClient]:
    """Reuse a caller's open client (one connection pool per flow) or open one for this call."""
    if isinstance(target, KlaviyoClient):
        yield target
        return
    async with KlaviyoClient(target) as client:
        yield client


def error_of(exc: KlaviyoAPIError) -> ApiError:
    """The first API error of an exception, or one built from its status when Klaviyo sent no error list."""
    return exc.first if exc.errors else ApiError(status=exc.status, detail=str(exc), meta={"retryable": exc.retryable})


def invalid(index: int, exc: Exception) -> ItemResult:
    """An item we refused to send: it never reached Klaviyo, so it is marked as permanent bad input."""
    return ItemResult(index=index, ok=False, error=ApiError(code="invalid_input", detail=str(exc)))


def failed(index: int, error: ApiError) -> ItemResult:
    return ItemResult(index=index, ok=False, error=error)


def ordered(results: dict[int, ItemResult], count: int) -> list[ItemResult]:
    """Results aligned with the input; an index nobody filled is a bug, reported rather than hidden."""
    return [results.get(i) or failed(i, ApiError(code="internal", detail="no result recorded")) for i in range(count)]


def pointer_index(pointer: str | None, pattern: str) -> int | None:
    """The item index a JSON pointer names, e.g. ``/data/attributes/profiles/data/(\\d+)``."""
    if not pointer:
        return None
    match = re.search(pattern, pointer)
    return int(match.group(1)) if match else None


async def gather_limited(factories: Sequence[Callable[[], Awaitable[T]]], concurrency: int) -> list[T]:
    """Run single-item calls concurrently but bounded; the pacer does the real throttling."""
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(factory: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await factory()

    return list(await asyncio.gather(*(one(f) for f in factories)))


async def send_each(
    credentials: CredentialsOrClient,
    operation_id: str,
    items: Sequence[T],
    build: Callable[[T], dict[str, Any]],
    concurrency: int,
) -> list[ItemResult]:
    """One request per item, for operations without a bulk form: bounded concurrency, and an item whose body
    cannot be built, or that Klaviyo refuses, fails alone."""

    async def one(client: KlaviyoClient, index: int, item: T) -> ItemResult:
        try:
            body = build(item)
        except (ValueError, TypeError) as exc:
            return invalid(index, exc)
        try:
            await client.request(operation_id, json=body)
        except KlaviyoAPIError as exc:
            return failed(index, error_of(exc))
        return ItemResult(index=index, ok=True)

    async with client_scope(credentials) as client:
        return await gather_limited([functools.partial(one, client, i, x) for i, x in enumerate(items)], concurrency)


def prevalidate(items: Sequence[T], check: Callable[[T], Any]) -> tuple[list[int], dict[int, ItemResult]]:
    """Run a builder on each item alone: bad items fail here, so they can never sink a whole bulk request."""
    good: list[int] = []
    bad: dict[int, ItemResult] = {}
    for i, item in enumerate(items):
        try:
            check(item)
        except (ValueError, TypeError) as exc:
            bad[i] = invalid(i, exc)
        else:
            good.append(i)
    return good, bad


async def send_with_resend(
    client: KlaviyoClient,
    operation_id: str,
    labels: list[int],
    build: Builder,
    *,
    path_params: dict[str, str] | None = None,
    max_rounds: int = 5,
    on_error: Callable[[int, ApiError], ItemResult] | None = None,
    success: Callable[[int], ItemResult] | None = None,
) -> dict[int, ItemResult]:
    """Send one bulk request; on a 4xx whose errors point at items, fail (or classify) those and resend the rest.

    Errors without a usable pointer, and transient errors that outlived the client's retries, fail every
    remaining item with the same error.
    """
    results: dict[int, ItemResult] = {}
    pending = list(labels)
    for _ in range(max_rounds):
        if not pending:
            break
        body, locate = build(pending)
        try:
            await client.request(operation_id, path_params=path_params, json=body)
        except KlaviyoAPIError as exc:
            blamed: dict[int, ApiError] = {}
            for err in exc.errors if not exc.retryable else []:
                for label in locate(err.pointer):
                    blamed.setdefault(label, err)
            if not blamed:
                err = error_of(exc)
                results.update({label: failed(label, err) for label in pending})
                return results
            for label, err in blamed.items():
                results[label] = on_error(label, err) if on_error else failed(label, err)
            pending = [label for label in pending if label not in blamed]
            continue
        results.update({label: (success(label) if success else ItemResult(index=label, ok=True)) for label in pending})
        return results
    err = ApiError(code="too_many_partial_failures", detail=f"gave up after {max_rounds} resend rounds")
    results.update({label: failed(label, err) for label in pending})
    return results
