"""``klaviyo-segment demo``: the whole pipeline on one machine, with proof that every stage did its job.

sandbox (Klaviyo + Segment emulators) <- flows <- dispatcher <- store <- receiver <- Segment delivery simulator,
and Klaviyo engagement webhooks back through the receiver to Segment. :func:`run_pipeline` is also what the
end-to-end test drives, so the demo's checks are tested checks.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from klaviyo_segment.constants import KLAVIYO_REVISION
from klaviyo_segment.ingress.receiver import ReceiverSettings
from klaviyo_segment.ingress.runner import start_ingress

AUDIENCES = ["vip_customers", "first_time_shopper", "high_intent_browsers", "lapsed_90_days"]
CHURN_AUDIENCE = "churn_risk_users"
INVALID = {"type": "identify", "messageId": "demo-invalid-1", "traits": {"email": "no-ids@example.com"}}
Progress = Callable[[str], None]


@dataclass
class DemoResult:
    delivered: int = 0
    acknowledged: int = 0
    given_up: int = 0
    klaviyo: dict[str, Any] = field(default_factory=dict)
    segment_received: int = 0
    engagement_sent: int = 0
    flows: dict[str, dict[str, int]] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    lists: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def sandbox_env(box: Any) -> dict[str, str]:
    return {
        "KLAVIYO_API_KEY": box.klaviyo_api_key,
        "KLAVIYO_BASE_URL": box.klaviyo_url,
        "SEGMENT_WRITE_KEY": box.segment_write_key,
        "SEGMENT_BASE_URL": box.segment_url,
        "SEGMENT_SHARED_SECRET": box.segment_shared_secret,
        "KLAVIYO_WEBHOOK_SECRET": box.klaviyo_webhook_secret,
    }


async def create_lists(client: httpx.AsyncClient, names: list[str]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for name in names:
        response = await client.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": name}}})
        response.raise_for_status()
        ids[name] = response.json()["data"]["id"]
    return ids


def demo_config(lists: dict[str, str]) -> dict[str, Any]:
    return {
        "audiences": {key: lists[key] for key in AUDIENCES + [CHURN_AUDIENCE]},
        "onboarding": {"list_id": lists["Onboarding"], "max_age_days": 36500},
        "churn": {"audience_key": CHURN_AUDIENCE, "list_id": lists["Churn Win-back"]},
        "max_event_age_hours": 24 * 36500,
    }


async def wait_drained(store: Any, ingress: Any, timeout: float, progress: Callable[[str], None] | None = None) -> bool:
    """True once nothing is pending/leased and the dispatcher has nothing left to start; reports the backlog
    (messages per flow still in the inbox) whenever it changes, at most every 2 s."""
    deadline = time.monotonic() + timeout
    shown, last = None, 0.0
    while time.monotonic() < deadline:
        backlog = await store.backlog()
        if not backlog and not await store.pending_batches(redispatch_after_seconds=0):
            return True
        if progress and backlog != shown and time.monotonic() - last >= 2:
            shown, last = backlog, time.monotonic()
            progress("in the inbox: " + ", ".join(f"{flow} {n}" for flow, n in sorted(backlog.items())))
        ingress.dispatcher.wake_all()
        await asyncio.sleep(0.2)
    return False


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": round(statistics.median(ordered), 3), "p95": round(pick(0.95), 3), "n": len(ordered)}


async def run_pipeline(
    box: Any,
    store: Any,
    *,
    count: int = 150,
    seed: int = 7,
    batch_size: int = 10,
    timeout: float = 150.0,
    progress: Progress = lambda _: None,
    keep: Callable[[DemoResult, str], Any] | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> DemoResult:
    """Drive every stage against ``box`` (a started sandbox); credentials must already be in os.environ."""
    from klaviyo_segment.config import AppConfig
    from klaviyo_segment.devkit.sandbox.segment.generators import generate_stream
    from klaviyo_segment.devkit.sandbox.segment.simulator import deliver

    result = DemoResult()
    headers = {
        "Authorization": f"Klaviyo-API-Key {box.klaviyo_api_key}",
        "revision": KLAVIYO_REVISION,
        "Content-Type": "application/vnd.api+json",
        "Accept": "application/vnd.api+json",
    }
    async with httpx.AsyncClient(base_url=box.klaviyo_url, headers=headers, timeout=30, trust_env=False) as kl:
        progress("creating Klaviyo lists in the sandbox")
        result.lists = await create_lists(kl, AUDIENCES + [CHURN_AUDIENCE, "Onboarding", "Churn Win-back"])
        document = demo_config(result.lists)
        ingress = await start_ingress(
            store,
            AppConfig.from_document(document),
            mapping_document=document,
            settings=ReceiverSettings(box.segment_shared_secret, box.klaviyo_webhook_secret),
            dispatcher_options={"sweep_interval": 1.0, "redispatch_after": 30.0, "max_in_flight": 6},
        )
        try:
            await kl.post("/__sandbox/config", json={"webhook_url": f"{ingress.url}/klaviyo"})
            messages = (messages if messages is not None else generate_stream(count, seed=seed)) + [dict(INVALID)]
            result.delivered = len(messages)
            progress(f"Segment delivers {len(messages)} messages to {ingress.url}/segment")
            report = await deliver(
                f"{ingress.url}/segment",
                messages,
                box.segment_shared_secret,
                batch_size=batch_size,
                concurrency=4,
                seed=seed,
                progress=lambda done, total: progress(f"delivered {done}/{total}"),
            )
            result.acknowledged, result.given_up = len(report.acknowledged), len(report.given_up)
            progress("flows running (inline dispatch)")
            if not await wait_drained(store, ingress, timeout, progress):
                result.problems.append(f"inbox not drained within {timeout:.0f}s: {await store.backlog()}")
            profiles = (await kl.get("/__sandbox/profiles")).json()
            emails = [p["attributes"]["email"] for p in profiles if p["attributes"].get("email")][:5]
            events = [{"metric": "Opened Email", "email": e} for e in emails]
            if events:
                progress(f"Klaviyo sends {len(events)} engagement webhooks to {ingress.url}/klaviyo")
                sent = (await kl.post("/__sandbox/engagement", json={"events": events})).json()
                result.engagement_sent = len(sent.get("event_ids") or [])
                if sent.get("webhook_status") != 200:
                    result.problems.append(f"engagement webhook answered {sent.get('webhook_status')}")
                await wait_drained(store, ingress, timeout, progress)
            result.klaviyo = (await kl.get("/__sandbox")).json()
            async with httpx.AsyncClient(base_url=box.segment_url, timeout=30, trust_env=False) as seg:
                result.segment_received = len((await seg.get("/__sandbox/messages")).json())
            assert ingress.dispatcher is not None
            stats = ingress.dispatcher.stats
            result.flows, result.runs = stats.outcomes, stats.runs
            result.latency = {flow: _percentiles(v) for flow, v in stats.latencies.items()}
            result.durations = stats.durations
            _check(result, engagement=len(events))
            if keep is not None:
                await keep(result, ingress.url)
        finally:
            await ingress.stop()
    return result


def _check(result: DemoResult, engagement: int) -> None:
    """The facts the demo promises; each miss becomes a readable problem (exit 1)."""
    if result.given_up or result.acknowledged != result.delivered:
        result.problems.append(f"{result.given_up} deliveries not acknowledged")
    failed = sum(v.get("failed", 0) for v in result.flows.values())
    if failed > 1:  # only the deliberately invalid message may fail
        result.problems.append(f"{failed} failed messages (expected only the deliberately invalid one)")
    if not result.klaviyo.get("profiles"):
        result.problems.append("no Klaviyo profiles created")
    if engagement and result.segment_received < result.engagement_sent:
        result.problems.append("engagement did not reach Segment")


def _counts(title: str, name: str, unit: str, counts: dict[str, int] | None) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column(name)
    table.add_column(unit, justify="right")
    for key, n in sorted((counts or {}).items()):
        table.add_row(key, str(n))
    return table


def render(result: DemoResult, prefect_ui: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    k = result.klaviyo
    console.print(
        f"[bold]Klaviyo[/]: {k.get('profiles', 0)} profiles, {k.get('events', 0)} events, "
        f"subscribed {k.get('subscribed', {})}"
    )
    console.print(_counts("Klaviyo events by metric", "metric", "events", k.get("events_by_metric")))
    console.print(_counts("Klaviyo list memberships", "list", "members", k.get("lists")))
    flows = Table(title="Flows (inline dispatch)")
    for col in ("flow", "runs", "received", "sent", "skipped", "failed", "latency p50/p95 s"):
        flows.add_column(col)
    for flow, totals in sorted(result.flows.items()):
        lat = result.latency.get(flow, {})
        flows.add_row(
            flow,
            str(result.runs.get(flow, 0)),
            *(str(totals.get(c, 0)) for c in ("received", "sent", "skipped", "failed")),
            f"{lat.get('p50', '-')}/{lat.get('p95', '-')}",
        )
    console.print(flows)
    runs = sum(result.runs.values())
    console.print(
        f"Segment: {result.delivered} delivered, {result.acknowledged} acknowledged; "
        f"{result.segment_received} messages received by the Segment sandbox "
        f"({result.engagement_sent} engagement events sent back)"
    )
    console.print(f"Flow runs: {runs} ({1000 * runs / max(result.delivered, 1):.0f} per 1,000 delivered events)")
    if prefect_ui:
        console.print(f"Prefect UI: {prefect_ui}")
    for problem in result.problems:
        console.print(f"[red]problem:[/] {problem}")
    console.print("[green]demo OK[/]" if not result.problems else "[red]demo found problems[/]")


async def run_demo(*, keep: bool = False, count: int = 150, seed: int = 7) -> int:
    from rich.console import Console

    from klaviyo_segment.devkit.sandbox.server import Sandbox, SandboxOptions
    from klaviyo_segment.ingress.serve import prefect_api, ui_url
    from klaviyo_segment.store import Store

    err = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="klaviyo-segment-demo-") as tmp:
        os.environ["KLAVIYO_SEGMENT_HOME"] = tmp
        os.environ["KLAVIYO_SEGMENT_STORE_URL"] = f"sqlite:///{Path(tmp) / 'state.db'}"
        with Sandbox(SandboxOptions(rate_limits="on", seed=seed)) as box:
            os.environ.update(sandbox_env(box))
            err.print(f"sandbox: Klaviyo {box.klaviyo_url}, Segment {box.segment_url}")
            err.print("starting a local Prefect server (SQLite) ...")
            started = time.monotonic()
            async with prefect_api(Path(tmp) / "prefect") as api_url:
                err.print(f"Prefect UI: {ui_url(api_url)} (started in {time.monotonic() - started:.1f}s)")
                store = await Store.open(os.environ["KLAVIYO_SEGMENT_STORE_URL"])

                async def hold(res: DemoResult, url: str) -> None:
                    render(res, ui_url(api_url))
                    err.print(
                        f"--keep: receiver {url}/segment and {url}/klaviyo, Prefect UI {ui_url(api_url)}; "
                        "Ctrl-C to stop"
                    )
                    await asyncio.Event().wait()

                began = time.monotonic()

                def show(status: Any, message: str) -> None:
                    if err.is_terminal:
                        status.update(message)
                    elif not message.startswith("delivered "):
                        err.print(f"[{time.monotonic() - began:6.1f}s] {message}")

                try:
                    with err.status("running") as status:
                        result = await run_pipeline(
                            box,
                            store,
                            count=count,
                            seed=seed,
                            progress=lambda m: show(status, m),
                            keep=hold if keep else None,
                        )
                    render(result, ui_url(api_url))
                finally:
                    await store.close()
    return 0 if not result.problems else 1
