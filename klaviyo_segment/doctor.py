"""`doctor`: what can these credentials actually do, checked against the live API without writing anything.

Why probes instead of asking: Klaviyo has no "which scopes does my key have" endpoint. A read scope is checked
with the smallest harmless read; a write scope with a deliberately invalid body (``{"data": {}}``), which the API
rejects before writing: 403 means the scope is missing, 400 means it is granted and nothing was written. Any 2xx
answer to a read also proves the pinned ``revision`` header was accepted.

Segment's Tracking API answers 200 even for a wrong write key, so only reachability can be checked there.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from klaviyo_segment.constants import schema_path
from klaviyo_segment.redact import redact

if TYPE_CHECKING:
    from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
    from klaviyo_segment.blocks.segment import SegmentCredentials

#: (scope, operationId, query) — the harmless read per read scope.
READ_PROBES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("profiles:read", "get_profiles", {"page[size]": "1"}),
    ("lists:read", "get_lists", {}),
    ("metrics:read", "get_metrics", {}),
    ("events:read", "get_events", {"page[size]": "1"}),
)
#: (scope, operationId) — POSTed with an invalid body that cannot be written.
WRITE_PROBES: tuple[tuple[str, str], ...] = (
    ("profiles:write", "create_or_update_profile"),
    ("events:write", "create_event"),
    ("lists:write", "create_list"),  # invalid body: validation fails before any list exists
    ("subscriptions:write", "bulk_subscribe_profiles"),
)
INVALID_BODY: dict[str, Any] = {"data": {}}
SCOPE_FIX = "edit the private key in Klaviyo (Settings > API keys) and grant the {scope} scope"
AUTH_FIX = "set KLAVIYO_API_KEY (or the Klaviyo Credentials block) to a valid private key (pk_...)"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    result: str
    fix: str = ""


def _operation_paths() -> dict[str, str]:
    """Probe paths come from the shipped schema so they follow the pinned revision."""
    operations = json.loads(schema_path().read_text())["operations"]
    return {op_id: op["path"] for op_id, op in operations.items()}


def _error_text(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        first = errors[0] if errors else {}
        text = first.get("detail") or first.get("title") or first.get("code") or ""
    except (ValueError, AttributeError):
        text = response.text[:200]
    return redact(str(text))


def _is_revision_error(response: httpx.Response) -> bool:
    return response.status_code == 410 or (response.status_code == 400 and "revision" in _error_text(response).lower())


async def _request(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response | str:
    try:
        return await client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"


def _read_check(scope: str, outcome: httpx.Response | str) -> Check:
    name = f"Klaviyo {scope}"
    if isinstance(outcome, str):
        return Check(name, False, outcome, "check the network and KLAVIYO_BASE_URL")
    status = outcome.status_code
    if outcome.is_success:
        return Check(name, True, f"granted (HTTP {status})")
    if status == 403:
        return Check(name, False, "scope missing (HTTP 403)", SCOPE_FIX.format(scope=scope))
    return Check(name, False, f"HTTP {status}: {_error_text(outcome)}", "see the error; rerun doctor")


def _write_check(scope: str, outcome: httpx.Response | str) -> Check:
    name = f"Klaviyo {scope}"
    if isinstance(outcome, str):
        return Check(name, False, outcome, "check the network and KLAVIYO_BASE_URL")
    status = outcome.status_code
    if status in (400, 422):
        return Check(name, True, f"granted (invalid probe body rejected with HTTP {status}; nothing written)")
    if status == 403:
        return Check(name, False, "scope missing (HTTP 403)", SCOPE_FIX.format(scope=scope))
    if outcome.is_success:
        return Check(
            name,
            False,
            f"the API accepted an invalid probe body (HTTP {status})",
            "report this: doctor's write probe must never be accepted",
        )
    return Check(name, False, f"HTTP {status}: {_error_text(outcome)}", "see the error; rerun doctor")


async def check_klaviyo(credentials: KlaviyoCredentials) -> list[Check]:
    """Auth first: with a rejected key every scope probe would only repeat the same 401."""
    paths = _operation_paths()
    async with credentials.get_client() as client:
        first_scope, first_op, first_query = READ_PROBES[0]
        first = await _request(client, "GET", paths[first_op], params=first_query)
        if isinstance(first, str):
            return [Check("Klaviyo API", False, first, "check the network and KLAVIYO_BASE_URL")]
        if first.status_code == 401 or (first.status_code == 400 and not _is_revision_error(first)):
            return [
                Check("Klaviyo API key", False, f"rejected (HTTP {first.status_code}): {_error_text(first)}", AUTH_FIX)
            ]
        if _is_revision_error(first):
            return [
                Check("Klaviyo API key", True, "accepted"),
                Check(
                    f"Klaviyo revision {credentials.revision}",
                    False,
                    f"rejected (HTTP {first.status_code}): {_error_text(first)}",
                    "upgrade klaviyo-segment; run `klaviyo-segment check-revision` against the new spec",
                ),
            ]
        rest = await asyncio.gather(
            *(_request(client, "GET", paths[op], params=query) for _, op, query in READ_PROBES[1:]),
            *(_request(client, "POST", paths[op], json=INVALID_BODY) for _, op in WRITE_PROBES),
        )
    reads = [first, *rest[: len(READ_PROBES) - 1]]
    writes = rest[len(READ_PROBES) - 1 :]
    checks = [Check("Klaviyo API key", True, "accepted")]
    revision_ok = any(isinstance(r, httpx.Response) and r.is_success for r in reads)
    checks.append(
        Check(
            f"Klaviyo revision {credentials.revision}",
            revision_ok,
            "accepted" if revision_ok else "unknown: no read succeeded to prove it",
            "" if revision_ok else "grant at least one read scope, then rerun doctor",
        )
    )
    checks += [_read_check(scope, r) for (scope, _, _), r in zip(READ_PROBES, reads, strict=False)]
    checks += [_write_check(scope, r) for (scope, _), r in zip(WRITE_PROBES, writes, strict=False)]
    return checks


async def check_segment(credentials: SegmentCredentials) -> list[Check]:
    """An empty batch tracks nothing; any HTTP answer proves reachability (and nothing more)."""
    async with credentials.get_client() as client:
        outcome = await _request(client, "POST", "/v1/batch", json={"batch": []})
    target = credentials.resolved_base_url
    if isinstance(outcome, str):
        return [
            Check(
                "Segment reachability",
                False,
                f"{target}: {outcome}",
                "check the network, SEGMENT_REGION / SEGMENT_BASE_URL",
            )
        ]
    if outcome.status_code >= 500:
        return [
            Check(
                "Segment reachability",
                False,
                f"{target}: HTTP {outcome.status_code}",
                "Segment is failing; retry later",
            )
        ]
    return [
        Check(
            "Segment reachability",
            True,
            f"{target} answered HTTP {outcome.status_code}; the write key itself cannot be verified "
            "(Segment answers 200 even for a wrong key): check events arrive in the source's Debugger",
        )
    ]


async def run_doctor(klaviyo: KlaviyoCredentials | None, segment: SegmentCredentials | None) -> list[Check]:
    """All checks; a side that is not configured is reported by the caller (with its ConfigError as the fix)."""
    results = await asyncio.gather(
        check_klaviyo(klaviyo) if klaviyo is not None else asyncio.sleep(0, result=[]),
        check_segment(segment) if segment is not None else asyncio.sleep(0, result=[]),
    )
    return [check for group in results for check in group]
