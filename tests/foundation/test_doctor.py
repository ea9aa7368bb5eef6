"""doctor with respx for Klaviyo (127.0.0.1 passes through to the real fake Segment server)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx
from typer.testing import CliRunner

from klaviyo_segment.cli.app import app

from .conftest import FakeSegment

KLAVIYO = "https://klaviyo.test"
READS = ["/api/profiles", "/api/lists", "/api/metrics", "/api/events"]
WRITES = ["/api/profile-import", "/api/events", "/api/lists", "/api/profile-subscription-bulk-create-jobs"]
runner = CliRunner()


def _error(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"status": status, "code": code, "title": code, "detail": detail}]})


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, segment: FakeSegment) -> FakeSegment:
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_doctor")
    monkeypatch.setenv("KLAVIYO_BASE_URL", KLAVIYO)
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "wk_doctor")
    monkeypatch.setenv("SEGMENT_BASE_URL", segment.url)
    return segment


@pytest.fixture
def klaviyo() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=KLAVIYO, assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        for path in READS:
            mock.get(path, name=f"GET {path}").mock(return_value=httpx.Response(200, json={"data": []}))
        for path in WRITES:
            mock.post(path, name=f"POST {path}").mock(
                return_value=_error(400, "invalid", "The payload provided in the request is invalid.")
            )
        yield mock


def _run() -> tuple[int, str]:
    result = runner.invoke(app, ["doctor"])
    return result.exit_code, " ".join(result.output.split())


def test_all_good(env: FakeSegment, klaviyo: respx.MockRouter) -> None:
    code, out = _run()
    assert code == 0, out
    for scope in (
        "profiles:read",
        "lists:read",
        "metrics:read",
        "events:read",
        "profiles:write",
        "events:write",
        "lists:write",
        "subscriptions:write",
    ):
        assert f"Klaviyo {scope}" in out
    assert "revision 2026-07-15" in out and "FAILED" not in out
    assert "cannot be verified" in out  # Segment: reachability only, and the table says so
    assert [(r["path"], r["body"], r["basic_user"]) for r in env.requests] == [
        ("/v1/batch", {"batch": []}, "wk_doctor:")
    ]
    for call in klaviyo.calls:
        if call.request.url.host != "klaviyo.test":
            continue
        assert call.request.headers["revision"] == "2026-07-15"
        if call.request.method == "POST":
            assert json.loads(call.request.content) == {"data": {}}  # nothing writable was ever sent


def test_missing_scope_403(env: FakeSegment, klaviyo: respx.MockRouter) -> None:
    klaviyo.routes["POST /api/events"].mock(return_value=_error(403, "permission_denied", "missing scope"))
    klaviyo.routes["GET /api/metrics"].mock(return_value=_error(403, "permission_denied", "missing scope"))
    code, out = _run()
    assert code == 1
    assert "grant the events:write scope" in out and "grant the metrics:read scope" in out
    assert out.count("FAILED") == 2 and "2 failed" in out


def test_bad_key_401(env: FakeSegment, klaviyo: respx.MockRouter) -> None:
    klaviyo.routes["GET /api/profiles"].mock(
        return_value=_error(401, "not_authenticated", "Incorrect authentication credentials.")
    )
    code, out = _run()
    assert code == 1
    assert "rejected (HTTP 401)" in out and "KLAVIYO_API_KEY" in out
    klaviyo_paths = [c.request.url.path for c in klaviyo.calls if c.request.url.host == "klaviyo.test"]
    assert klaviyo_paths == ["/api/profiles"]  # no pointless scope probes


def test_revision_rejected(env: FakeSegment, klaviyo: respx.MockRouter) -> None:
    klaviyo.routes["GET /api/profiles"].mock(
        return_value=_error(400, "invalid_revision", "The revision header is not a valid revision.")
    )
    code, out = _run()
    assert code == 1 and "check-revision" in out


def test_segment_not_configured(env: FakeSegment, klaviyo: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENT_WRITE_KEY")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # no saved block to fall back on
        code, out = _run()
    assert code == 1 and "Segment credentials" in out and "SEGMENT_WRITE_KEY" in out
    assert env.requests == []
