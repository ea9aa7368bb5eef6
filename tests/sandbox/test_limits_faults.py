"""Rate limits at the spec's figures and deterministic faults, observed by a real httpx client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from klaviyo_segment.devkit.sandbox.klaviyo.faults import GRAMMAR_HELP, FaultMiddleware, parse_faults, wrap_app
from klaviyo_segment.devkit.sandbox.klaviyo.operations import load_operations, match
from klaviyo_segment.devkit.sandbox.klaviyo.ratelimit import RateLimitMiddleware, parse_mode
from klaviyo_segment.devkit.sandbox.klaviyo.stats import SandboxStats
from tests.fixtures.clock import VirtualClock

AUTH = {"Authorization": "Klaviyo-API-Key pk_test_a", "revision": "2026-07-15"}
DAY = 86_400


class Clock:
    """Injectable epoch clock: tests move time instead of waiting."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tiny_app(applied: list[str]) -> Starlette:
    """Stand-in for the emulator core: records what it applied so "lost" can be proven applied."""

    async def accept(request: Request) -> JSONResponse:
        applied.append(f"{request.method} {request.url.path} {(await request.body()).decode()}")
        return JSONResponse({"data": None}, status_code=202)

    async def inspect(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/api/events", accept, methods=["POST"]),
            Route("/api/event-bulk-create-jobs", accept, methods=["POST"]),
            Route("/api/lists", accept, methods=["POST"]),
            Route("/api/profiles/{id}", accept, methods=["GET"]),
            Route("/__sandbox/stats", inspect, methods=["GET"]),
        ]
    )


def make(
    mode: str = "on",
    faults: str | None = None,
    seed: int = 0,
    t: float = 1000.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
):
    applied: list[str] = []
    stats = SandboxStats()
    clock = Clock(t)
    app = wrap_app(
        tiny_app(applied),
        stats=stats,
        rate_limits=mode,
        faults=parse_faults(faults) if faults else None,
        seed=seed,
        clock=clock,
        sleep=sleep,
    )
    return app, stats, clock, applied


def asgi_client(app: RateLimitMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox")


@contextlib.asynccontextmanager
async def serve(app: RateLimitMiddleware) -> AsyncIterator[str]:
    """Serve over real TCP on 127.0.0.1 with uvicorn, so connection-level faults are what a client sees."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off"))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 60  # generous: only turns a hang into a failure on a busy machine
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def fire(client: httpx.AsyncClient, path: str, n: int, method: str = "POST") -> list[int]:
    return [(await client.request(method, path, headers=AUTH, content=b"{}")).status_code for _ in range(n)]


# ---------------------------------------------------------------- operations map


def test_operations_map_matches_templates_and_limits() -> None:
    ops = load_operations()
    assert (ops["create_list"].burst, ops["create_list"].steady, ops["create_list"].daily) == (10, 150, 150)
    op, params = match("post", "/api/lists/L1/relationships/profiles/")
    assert op.id == "add_profiles_to_list" and params == {"id": "L1"}
    assert match("DELETE", "/api/lists/L1/relationships/profiles")[0].id == "remove_profiles_from_list"
    assert (
        match("GET", "/api/profile-bulk-import-jobs/J1/import-errors")[0].id
        == "get_errors_for_bulk_import_profiles_job"
    )
    assert match("GET", "/api/profile-bulk-import-jobs/J1")[0].id == "get_bulk_import_profiles_job"
    assert match("GET", "/api/lists/L1/profiles")[0].id == "get_profiles_for_list"
    assert match("PUT", "/api/profiles/P1") is None and match("GET", "/api/nope") is None
    assert match("GET", "/api/profiles/a/b") is None


# ---------------------------------------------------------------- rate limits at the spec's figures


async def test_bulk_create_events_10_per_second_then_150_per_minute() -> None:
    app, stats, clock, _ = make()
    async with asgi_client(app) as client:
        assert await fire(client, "/api/event-bulk-create-jobs", 10) == [202] * 10
        clock.t = 1000.4
        throttled = await client.post("/api/event-bulk-create-jobs", headers=AUTH, content=b"{}")
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "1"
        assert not [h for h in throttled.headers if h.lower().startswith("ratelimit-")]
        error = throttled.json()["errors"][0]
        assert {k: error[k] for k in ("status", "code", "title", "detail", "source")} == {
            "status": 429,
            "code": "throttled",
            "title": "Request was throttled.",
            "detail": "Request was throttled. Expected available in 1 second.",
            "source": {"pointer": "/data/"},
        }
        assert error["id"] and error["meta"] == {} and "links" in error
        for second in range(1, 14):  # 14 full bursts: 140 so far, then 10 more at t=1014
            clock.t = 1000 + second
            assert await fire(client, "/api/event-bulk-create-jobs", 10) == [202] * 10
        clock.t = 1014
        assert await fire(client, "/api/event-bulk-create-jobs", 10) == [202] * 10
        clock.t = 1015.5  # fresh burst window, but 150 used in the steady window [960, 1020)
        late = await client.post("/api/event-bulk-create-jobs", headers=AUTH, content=b"{}")
        assert late.status_code == 429 and late.headers["retry-after"] == "5"
        assert "5 seconds" in late.json()["errors"][0]["detail"]
        clock.t = 1020.0
        assert (await fire(client, "/api/event-bulk-create-jobs", 1)) == [202]
    snap = stats.snapshot()
    assert snap["throttled"] == {"bulk_create_events": 2}
    assert snap["requests"]["bulk_create_events"] == 153 and snap["faults_total"] == 0


async def test_create_event_350_per_second() -> None:
    app, stats, clock, _ = make()
    async with asgi_client(app) as client:
        assert await fire(client, "/api/events", 350) == [202] * 350
        assert await fire(client, "/api/events", 1) == [429]
        clock.t += 1
        assert await fire(client, "/api/events", 1) == [202]
    assert stats.snapshot()["throttled"] == {"create_event": 1}


async def test_create_list_150_per_day_and_retry_after_to_midnight() -> None:
    day_start = 20_000 * DAY
    app, stats, clock, _ = make(t=day_start + 3600)
    async with asgi_client(app) as client:
        for second in range(15):
            clock.t = day_start + 3600 + second
            assert await fire(client, "/api/lists", 10) == [202] * 10
        clock.t = day_start + 3600 + 120  # burst and steady windows are fresh again; the day is used up
        refused = await client.post("/api/lists", headers=AUTH, content=b"{}")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == str(DAY - 3600 - 120)
        clock.t = day_start + DAY
        assert await fire(client, "/api/lists", 1) == [202]


async def test_headers_describe_the_steady_window_and_keys_are_separate() -> None:
    app, _, clock, _ = make(t=960.0 + 15.2)
    async with asgi_client(app) as client:
        first = await client.post("/api/event-bulk-create-jobs", headers=AUTH, content=b"{}")
        assert (
            first.headers["ratelimit-limit"],
            first.headers["ratelimit-remaining"],
            first.headers["ratelimit-reset"],
        ) == ("150", "149", "45")
        await fire(client, "/api/event-bulk-create-jobs", 9)
        assert await fire(client, "/api/event-bulk-create-jobs", 1) == [429]
        other = await client.post(
            "/api/event-bulk-create-jobs", content=b"{}", headers={**AUTH, "Authorization": "Klaviyo-API-Key pk_test_b"}
        )
        assert other.status_code == 202 and other.headers["ratelimit-remaining"] == "149"
        anonymous = [(await client.post("/api/event-bulk-create-jobs", content=b"{}")) for _ in range(12)]
        assert {r.status_code for r in anonymous} == {202}
        assert "ratelimit-limit" not in anonymous[0].headers


async def test_scale_off_and_runtime_configure() -> None:
    app, stats, clock, _ = make(mode="scale=0.1")
    async with asgi_client(app) as client:
        # bulk_create_events 10/s,150/m -> 1/s,15/m
        assert await fire(client, "/api/event-bulk-create-jobs", 2) == [202, 429]
        ok = await client.get("/api/profiles/p1", headers=AUTH)  # get_profile 75/s,750/m -> 7/s,75/m
        assert ok.headers["ratelimit-limit"] == "75"
        app.configure("scale=10")
        clock.t += 1
        assert await fire(client, "/api/event-bulk-create-jobs", 100) == [202] * 100
        app.configure("scale=0.001")  # floors at 1 per window, never 0
        clock.t += 60
        assert await fire(client, "/api/event-bulk-create-jobs", 2) == [202, 429]
        app.configure("off")
        responses = [await client.post("/api/event-bulk-create-jobs", headers=AUTH) for _ in range(30)]
        assert {r.status_code for r in responses} == {202}
        assert "ratelimit-limit" not in responses[0].headers
        assert (await client.get("/__sandbox/stats")).json() == {"ok": True}
    assert "unknown" not in stats.snapshot()["requests"]  # the inspection API is never counted


@pytest.mark.parametrize("bad", ["", "fast", "scale=0", "scale=-1", "scale=abc", "scale=", "on=1"])
def test_parse_mode_rejects_bad_values(bad: str) -> None:
    with pytest.raises(ValueError, match="rate-limit mode"):
        parse_mode(bad)


def test_parse_mode_accepts_documented_values() -> None:
    assert parse_mode("on").enabled and parse_mode("ON").scale == 1.0
    assert not parse_mode("off").enabled
    assert parse_mode("scale=0.1").scale == pytest.approx(0.1)


# ---------------------------------------------------------------- fault grammar


@pytest.mark.parametrize(
    "bad,needle",
    [
        ("events:503=0.1", "unknown operation"),
        ("create_event:503=1.5", "outside"),
        ("create_event:503=0.6,500=0.6", "more than 1"),
        ("create_event:latency=fast", "latency"),
        ("create_event", "OPS:EFFECT"),
        ("create_event:teapot=0.1", "unknown effect"),
        ("create_event:500=x", "probability"),
        ("create_event:500=0.1,500=0.2", "twice"),
    ],
)
def test_parse_faults_rejects_bad_specs(bad: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_faults(bad)


def test_parse_faults_grammar() -> None:
    spec = parse_faults("bulk_create_events|create_event:503=0.1,reset=0.02;*:latency=10-80ms;")
    assert spec.plan("create_event") == ([("503", 0.1), ("reset", 0.02)], [(0.01, 0.08)])
    assert spec.plan("get_profiles") == ([], [(0.01, 0.08)])
    assert parse_faults("").rules == ()
    for word in ("500=P", "502=P", "503=P", "429=P", "reset=P", "timeout=P", "lost=P", "latency=", "seed"):
        assert word in GRAMMAR_HELP


def test_draws_are_deterministic_by_seed() -> None:
    spec = parse_faults("*:500=0.2,503=0.2,latency=1-5ms")

    def sequence(seed: int) -> list[tuple[str | None, float]]:
        middleware = FaultMiddleware(tiny_app([]), spec, seed, SandboxStats())
        return [middleware.draw("create_event") for _ in range(200)]

    assert sequence(7) == sequence(7) != sequence(8)
    kinds = [kind for kind, _ in sequence(7)]
    assert 20 < kinds.count("500") < 60 and 20 < kinds.count("503") < 60
    assert all(0.001 <= delay <= 0.005 for _, delay in sequence(7))


# ---------------------------------------------------------------- faults seen by a real client over TCP


async def test_same_seed_same_statuses_over_http() -> None:
    app, stats, _, _ = make(mode="off", faults="create_event:503=0.5", seed=42)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        first = await fire(client, "/api/events", 30)
        app.app.configure(parse_faults("create_event:503=0.5"), seed=42)
        second = await fire(client, "/api/events", 30)
    assert first == second and set(first) == {202, 503}
    assert stats.snapshot()["faults"]["503"] == first.count(503) * 2


@pytest.mark.parametrize("code", [500, 502, 503])
async def test_injected_5xx_not_applied(code: int) -> None:
    app, stats, _, applied = make(faults=f"create_event:{code}=1")
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        response = await client.post("/api/events", headers=AUTH, content=b"{}")
        other = await client.post("/api/lists", headers=AUTH, content=b"{}")
    assert response.status_code == code and response.json()["errors"][0]["status"] == code
    assert other.status_code == 202 and applied == ["POST /api/lists {}"]
    assert stats.snapshot()["faults_by_operation"] == {"create_event": {str(code): 1}}


async def test_injected_429_counts_as_fault_not_throttling() -> None:
    app, stats, _, _ = make(faults="create_event:429=1")
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        response = await client.post("/api/events", headers=AUTH, content=b"{}")
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["errors"][0]["code"] == "throttled"
    snap = stats.snapshot()
    assert snap["faults"] == {"429": 1} and snap["throttled_total"] == 0


async def test_reset_drops_connection_without_applying() -> None:
    app, stats, _, applied = make(faults="create_event:reset=1")
    async with serve(app) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await client.post("/api/events", headers=AUTH, content=b'{"n":1}')
        async with httpx.AsyncClient(base_url=base) as client:  # the server itself survives
            assert (await client.post("/api/lists", headers=AUTH, content=b"{}")).status_code == 202
    assert applied == ["POST /api/lists {}"] and stats.snapshot()["faults"] == {"reset": 1}


async def test_lost_202_is_applied_but_answer_dropped() -> None:
    app, stats, _, applied = make(faults="bulk_create_events:lost=1")
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.post("/api/event-bulk-create-jobs", headers=AUTH, content=b'{"job":1}')
    assert applied == ['POST /api/event-bulk-create-jobs {"job":1}']
    assert stats.snapshot()["faults"] == {"lost": 1}


async def test_timeout_hangs_past_client_timeout() -> None:
    app, stats, _, applied = make(faults="create_event:timeout=1")
    app.app.hang_seconds = 5.0
    async with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=0.3) as client:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/api/events", headers=AUTH, content=b"{}")
            assert time.monotonic() - started >= 0.3
            # the next request is not delayed: a generous timeout, so a busy machine cannot fail it
            assert (await client.get("/api/profiles/p1", headers=AUTH, timeout=30)).status_code == 202
    assert stats.snapshot()["faults"] == {"timeout": 1} and applied == ["GET /api/profiles/p1 "]


async def test_latency_added_and_sandbox_paths_untouched() -> None:
    clock = VirtualClock()  # records the latency the middleware serves instead of timing a busy machine
    app, stats, _, _ = make(faults="*:latency=150ms,503=1", sleep=clock.sleep)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        response = await client.get("/api/profiles/p1", headers=AUTH)
        assert clock.sleeps == [pytest.approx(0.15)] and response.status_code == 503
        assert (await client.get("/__sandbox/stats")).status_code == 200
        assert clock.sleeps == [pytest.approx(0.15)]  # the control path was not delayed
    assert stats.snapshot()["faults"] == {"latency": 1, "503": 1}
