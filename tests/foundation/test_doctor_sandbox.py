"""doctor against the real Klaviyo and Segment emulators: scopes are probed over HTTP, nothing is written."""

from __future__ import annotations

import httpx

from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
from klaviyo_segment.blocks.segment import SegmentCredentials
from klaviyo_segment.doctor import run_doctor


def _state(box) -> dict:
    return httpx.get(f"{box.klaviyo_url}/__sandbox/state").json()


async def test_doctor_all_good_writes_nothing(sandbox_factory) -> None:
    box = sandbox_factory(rate_limits="off")
    before = _state(box)
    checks = await run_doctor(
        KlaviyoCredentials(api_key=box.klaviyo_api_key, base_url=box.klaviyo_url),
        SegmentCredentials(write_key=box.segment_write_key, base_url=box.segment_url),
    )
    failed = [c for c in checks if not c.ok]
    assert failed == [], failed
    names = " ".join(c.name for c in checks)
    for scope in ("profiles:read", "profiles:write", "events:write", "lists:write", "subscriptions:write"):
        assert scope in names
    assert _state(box) == before  # invalid-body probes wrote nothing


async def test_doctor_reports_missing_scope_with_fix(sandbox_factory) -> None:
    box = sandbox_factory(rate_limits="off", scopes=["profiles:read", "profiles:write", "lists:read"])
    checks = await run_doctor(KlaviyoCredentials(api_key=box.klaviyo_api_key, base_url=box.klaviyo_url), None)
    by_name = {c.name: c for c in checks}
    missing = [c for c in checks if not c.ok]
    assert any("events:write" in c.name for c in missing)
    assert any("subscriptions:write" in c.name for c in missing)
    assert all(c.fix for c in missing)
    assert any(c.ok and "profiles:write" in name for name, c in by_name.items())


async def test_doctor_rejected_key(sandbox_factory) -> None:
    box = sandbox_factory(rate_limits="off")
    checks = await run_doctor(KlaviyoCredentials(api_key="pk_not_the_sandbox_key", base_url=box.klaviyo_url), None)
    assert checks and not checks[0].ok
    assert "KLAVIYO_API_KEY" in checks[0].fix


def test_probes_exist_in_the_shipped_schema() -> None:
    from klaviyo_segment.doctor import READ_PROBES, WRITE_PROBES, _operation_paths

    paths = _operation_paths()
    assert all(op in paths for _, op, _ in READ_PROBES)
    assert all(op in paths for _, op in WRITE_PROBES)
