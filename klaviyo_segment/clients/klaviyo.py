"""Async Klaviyo client: operation lookup from the schema, pacing, retries and JSON:API error parsing.

Only transient failures are retried here (429, 5xx, timeouts, resets), with the shared policy of
:mod:`klaviyo_segment.clients.retry`; tasks therefore run with Prefect ``retries=0`` and turn the typed
``KlaviyoAPIError`` into per-item results.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from klaviyo_segment import redact
from klaviyo_segment.clients.operations import format_path, operation
from klaviyo_segment.clients.pacers import shared_pacer
from klaviyo_segment.clients.pacing import Pacer
from klaviyo_segment.clients.retry import RetryPolicy, retryable_status, send_with_retry
from klaviyo_segment.errors import ApiError, KlaviyoAPIError
from klaviyo_segment.jsondict import obj

if TYPE_CHECKING:
    from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials

logger = logging.getLogger("klaviyo_segment.klaviyo")
redact.install(logger)


def parse_errors(response: httpx.Response) -> list[ApiError]:
    """JSON:API ``errors`` as typed objects; malformed or non-JSON bodies still yield one readable error."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    raw = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(raw, list) or not raw:
        text = redact.redact(response.text[:300]) if response.content else ""
        return [ApiError(status=response.status_code, detail=text or response.reason_phrase or None)]
    out: list[ApiError] = []
    for item in raw:
        if not isinstance(item, dict):
            out.append(ApiError(status=response.status_code, detail=str(item)[:300]))
            continue
        source = obj(item, "source")
        meta = obj(item, "meta")
        try:
            status = int(item.get("status", response.status_code))
        except (TypeError, ValueError):
            status = response.status_code
        out.append(
            ApiError(
                status=status,
                code=item.get("code"),
                title=item.get("title"),
                detail=item.get("detail"),
                pointer=source.get("pointer") or source.get("parameter"),
                meta=meta,
            )
        )
    return out


class KlaviyoClient:
    """One account's API client; use as ``async with KlaviyoClient(creds) as client``."""

    def __init__(
        self,
        credentials: KlaviyoCredentials,
        *,
        pacer: Pacer | None = None,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``retry`` wins over ``max_attempts``/``backoff_*``/``sleep`` (kept as the short spelling)."""
        self.credentials = credentials
        self.revision = credentials.revision
        self.pacer: Pacer = pacer if pacer is not None else shared_pacer(credentials.account_key)
        self.retry = retry or RetryPolicy(
            attempts=max(1, max_attempts), base=backoff_base, cap=backoff_max, sleep=sleep
        )
        self._http = http
        self._owns_http = http is None

    async def __aenter__(self) -> KlaviyoClient:
        if self._http is None:
            self._http = self.credentials.get_client()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def request(
        self,
        operation_id: str,
        *,
        path_params: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """Send one operation; returns the 2xx response or raises ``KlaviyoAPIError``."""
        op = operation(operation_id, self.revision)
        path = format_path(operation_id, path_params, self.revision)
        return await self._send(operation_id, op["method"], path, params=params, json=json)

    async def _send(
        self, operation_id: str, method: str, url: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> httpx.Response:
        if self._http is None:
            raise RuntimeError("KlaviyoClient must be used as an async context manager")
        content = None if json is None else _dumps(json)
        http = self._http

        async def send() -> httpx.Response:
            await self.pacer.acquire(operation_id)  # every attempt counts against the quota
            response = await http.request(method, url, params=params, content=content)
            self.pacer.observe(operation_id, response)
            return response

        response = await send_with_retry(
            send,
            self.retry,
            label=f"klaviyo {method} {url}",
            log=logger,
            error_for=_api_error,
            network_error=lambda exc, n: KlaviyoAPIError(
                None, message=f"{type(exc).__name__} after {n} attempts", retryable=True
            ),
            detail=lambda exc: redact.redact(exc.first.detail or "") if isinstance(exc, KlaviyoAPIError) else "",
        )
        logger.debug("klaviyo %s %s -> %d", method, url, response.status_code)
        return response

    async def paginate(
        self, operation_id: str, params: dict[str, Any] | None = None, *, path_params: dict[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield each page document (``data``, ``included``, ``links``), following ``links.next`` to the end.

        The next link is re-rooted on our base URL: a proxy or sandbox may advertise a different host.
        """
        op = operation(operation_id, self.revision)
        url: str | None = format_path(operation_id, path_params, self.revision)
        page_params = params
        while url:
            response = await self._send(operation_id, op["method"], url, params=page_params)
            doc = _json_document(response)
            yield doc
            nxt = (doc.get("links") or {}).get("next")
            if not nxt:
                break
            parts = urlsplit(nxt)
            url, page_params = parts.path + (f"?{parts.query}" if parts.query else ""), None


def _api_error(response: httpx.Response) -> KlaviyoAPIError:
    status = response.status_code
    return KlaviyoAPIError(status, parse_errors(response), retryable=retryable_status(status))


def _dumps(body: Any) -> bytes:
    import json as _json

    return _json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_document(response: httpx.Response) -> dict[str, Any]:
    """A 2xx body we cannot parse is a server fault worth surfacing, not a silent empty page."""
    try:
        doc = response.json()
    except ValueError as exc:
        raise KlaviyoAPIError(
            response.status_code, message="malformed JSON in a successful response", retryable=True
        ) from exc
    if not isinstance(doc, dict):
        raise KlaviyoAPIError(response.status_code, message="unexpected JSON document", retryable=True)
    return doc
