"""Security and privacy: no secret anywhere a run leaves traces, a Segment delete leaves no trace of the person,
and the receiver refuses everything but /healthz without its secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from klaviyo_segment.config import AppConfig
from klaviyo_segment.flows import names as flow_names
from klaviyo_segment.ingress.receiver import ReceiverSettings
from klaviyo_segment.ingress.runner import start_ingress
from klaviyo_segment.ingress.signatures import klaviyo_signature, segment_signature
from klaviyo_segment.run_state import run_summary  # a run with dead letters ends Failed
from klaviyo_segment.store import Store

NOW = datetime.now(UTC).replace(microsecond=0)
EMAIL, PHONE, USER = "privacy.person@example.com", "+14155550199", "u-privacy-7"


def _ts(hours: float = 0.1) -> str:
    return (NOW - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


async def dump_store(url: str) -> str:
    """Every row of every table, as text: what a leak or a leftover would look like to an attacker."""
    store = await Store.open(url)
    try:
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            rows = []
            for name in names:
                result = await conn.execute(sa.text(f'SELECT * FROM "{name}"'))
                rows.extend(f"{name}: {tuple(r)}" for r in result)
        return "\n".join(rows)
    finally:
        await store.close()


async def prefect_traces() -> tuple[str, str]:
    """(logs, artifacts + run parameters/states) the Prefect API holds, for every run of this session."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        logs = await client.read_logs(limit=200)
        offset = 200
        while True:
            page = await client.read_logs(limit=200, offset=offset)
            if not page:
                break
            logs.extend(page)
            offset += 200
        artifacts = await client.read_artifacts()
        runs = await client.read_flow_runs()
    return (
        "\n".join(log.message for log in logs),
        "\n".join(
            [
                *(repr(a.data) + str(a.description) for a in artifacts),
                *(repr(r.parameters) + str(r.state.message if r.state else "") for r in runs),
            ]
        ),
    )


@pytest.fixture
def wired(
    sandbox_factory: Callable[..., Any], prefect_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Any, str]:
    from klaviyo_segment.clients.retry import RetryPolicy

    box = sandbox_factory(rate_limits="off")
    store_url = f"sqlite:///{tmp_path}/state.db"
    for name, value in {
        "KLAVIYO_API_KEY": box.klaviyo_api_key,
        "KLAVIYO_BASE_URL": box.klaviyo_url,
        "SEGMENT_WRITE_KEY": box.segment_write_key,
        "SEGMENT_BASE_URL": box.segment_url,
        "SEGMENT_SHARED_SECRET": box.segment_shared_secret,
        "KLAVIYO_WEBHOOK_SECRET": box.klaviyo_webhook_secret,
        "KLAVIYO_SEGMENT_STORE_URL": store_url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.01)
    return box, store_url


async def test_full_run_leaks_no_secret_and_delete_leaves_no_trace(
    wired: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    from klaviyo_segment.flows.forward_track import forward_track
    from klaviyo_segment.flows.sync_identify import sync_identify

    box, store_url = wired
    caplog.set_level(logging.INFO)  # the default level; third-party DEBUG logs (SQL parameters) are opt-in
    person = {"userId": USER, "context": {"traits": {"email": EMAIL, "phone": PHONE}}}
    tracks = [
        {
            "type": "track",
            "messageId": "t-ok",
            "event": "Order Completed",
            "timestamp": _ts(),
            "properties": {"order_id": "o-1", "total": 5, "email": EMAIL},
            **person,
        },
        {"type": "track", "messageId": "t-bad", "timestamp": _ts(), "properties": {"phone": PHONE}, **person},
    ]
    result = await run_summary(forward_track, messages=tracks, config={})
    assert result["failed"] == 1  # the invalid one is a dead letter: it must not outlive the delete below
    httpx.post(f"{box.klaviyo_url}/__sandbox/config", json={"faults": "*:500=1"}).raise_for_status()
    errors: list[str] = []
    try:
        failed = await run_summary(
            sync_identify,
            messages=[
                {
                    "type": "identify",
                    "messageId": "i-1",
                    "timestamp": _ts(0.2),
                    "traits": {"email": EMAIL, "phone": PHONE},
                    "userId": USER,
                }
            ],
            config={},
        )
        errors.extend(str(o) for o in failed["outcomes"])
    except Exception as exc:  # an exception's text is a trace too
        errors.append(repr(exc))
    httpx.post(f"{box.klaviyo_url}/__sandbox/config", json={"faults": None}).raise_for_status()

    secrets = [box.klaviyo_api_key, box.segment_write_key, box.segment_shared_secret, box.klaviyo_webhook_secret]
    before_delete = await dump_store(store_url)
    assert USER in before_delete  # the dump really sees the person's rows (else the checks below prove nothing)
    prefect_logs, prefect_objects = await prefect_traces()
    # Run parameters hold the messages themselves when a flow is called with ``messages=`` (ingress passes
    # batch ids instead), so they are checked for secrets only; logs must not carry PII either.
    traces = {
        "caplog": caplog.text,
        "prefect": prefect_logs,
        "prefect objects": prefect_objects,
        "store": before_delete,
        "errors": "\n".join(errors),
    }
    for where, text in traces.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
    for where in ("caplog", "prefect"):
        assert EMAIL not in traces[where] and PHONE not in traces[where], f"PII unredacted in {where} logs"

    deleted = await run_summary(
        sync_identify, messages=[{"type": "delete", "messageId": "d-1", "userId": USER, "timestamp": _ts(0)}], config={}
    )
    assert deleted["failed"] == 0, deleted["outcomes"]
    after = await dump_store(store_url)
    for trace in (USER, EMAIL, PHONE, EMAIL.split("@")[0]):
        assert trace not in after, f"{trace!r} survived the delete in the store"


async def test_redaction_of_logged_pii(caplog: pytest.LogCaptureFixture) -> None:
    from klaviyo_segment.clients import klaviyo as client_module

    caplog.set_level(logging.INFO)
    client_module.logger.warning("rejected profile %s / %s", EMAIL, PHONE)
    assert EMAIL not in caplog.text and PHONE not in caplog.text and "rejected profile" in caplog.text


SECRET = "seg-secret-xyz"
KSECRET = "kl-secret-xyz"


async def _post_all(url: str) -> dict[str, int]:
    body = b'{"type":"identify","messageId":"m1","userId":"u1"}'
    async with httpx.AsyncClient(base_url=url) as client:
        return {
            "healthz": (await client.get("/healthz")).status_code,
            "segment": (await client.post("/segment", content=body)).status_code,
            "segment_forged": (
                await client.post("/segment", content=body, headers={"X-Signature": "0" * 40})
            ).status_code,
            "klaviyo": (await client.post("/klaviyo", content=b'{"data":[],"meta":{}}')).status_code,
            "get_segment": (await client.get("/segment")).status_code,
            "other": (await client.post("/admin", content=body)).status_code,
        }


@pytest.mark.parametrize("configured", [False, True])
async def test_receiver_needs_its_secret_except_healthz(tmp_path: Path, configured: bool) -> None:
    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    settings = ReceiverSettings(
        segment_secret=SECRET if configured else None, klaviyo_secret=KSECRET if configured else None
    )
    ingress = await start_ingress(store, AppConfig(), settings=settings, dispatch=None, flows=list(flow_names()))
    try:
        codes = await _post_all(ingress.url)
        assert codes["healthz"] == 200
        assert codes["segment"] == codes["segment_forged"] == codes["klaviyo"] == 401, codes
        assert codes["get_segment"] == 405 and codes["other"] == 404
        assert await store.backlog() == {}
        if configured:  # a correctly signed message is accepted; a stale Klaviyo delivery is not
            msg = {"type": "identify", "messageId": "m1", "userId": "u1"}
            stale = b'{"data":[],"meta":{"timestamp":"2020-01-01T00:00:00Z","klaviyo_webhook_id":"W"}}'
            async with httpx.AsyncClient(base_url=ingress.url) as client:
                ok = await client.post("/segment", json=msg, headers={"X-Signature": segment_signature(SECRET, msg)})
                assert ok.status_code == 200
                r = await client.post(
                    "/klaviyo",
                    content=stale,
                    headers={
                        "Klaviyo-Signature": klaviyo_signature(KSECRET, stale, "1"),
                        "Klaviyo-Timestamp": "1",
                        "Klaviyo-Webhook-Id": "W",
                    },
                )
                assert r.status_code == 401 and "window" in r.json()["error"]
                big = await client.post("/segment", content=b" " * (ingress_limit() + 1))
                assert big.status_code == 413
    finally:
        await ingress.stop()
        await store.close()


def ingress_limit() -> int:
    from klaviyo_segment.ingress.receiver import MAX_BODY_BYTES

    return MAX_BODY_BYTES


async def test_insecure_dev_flag_opens_the_receiver(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    ingress = await start_ingress(
        store, AppConfig(), settings=ReceiverSettings(insecure_dev=True), dispatch=None, flows=list(flow_names())
    )
    try:
        codes = await _post_all(ingress.url)
        assert codes["segment"] == 200 and codes["healthz"] == 200
    finally:
        await ingress.stop()
        await store.close()


TOKEN = "tok-9f8e7d"


async def test_webhook_token_guards_every_segment_post(tmp_path: Path) -> None:
    """With a token set, a correctly signed delivery without ``Authorization: Bearer <token>`` is 401: the token
    covers the whole request, where Segment's signature covers only the first event of a batch."""
    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    settings = ReceiverSettings(segment_secret=SECRET, segment_token=TOKEN)
    ingress = await start_ingress(store, AppConfig(), settings=settings, dispatch=None, flows=list(flow_names()))
    msg = {"type": "identify", "messageId": "m1", "userId": "u1"}
    signed = {"X-Signature": segment_signature(SECRET, msg)}
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            for auth in (None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN):
                headers = dict(signed, **({"Authorization": auth} if auth else {}))
                r = await client.post("/segment", json=msg, headers=headers)
                assert r.status_code == 401 and "token" in r.json()["error"], (auth, r.text)
            ok = await client.post("/segment", json=msg, headers=dict(signed, Authorization=f"Bearer {TOKEN}"))
            assert ok.status_code == 200, ok.text
        assert await store.backlog() == {"sync-identify": 1}
    finally:
        await ingress.stop()
    rotating = ReceiverSettings(segment_secret=SECRET, segment_token=f"{TOKEN}, tok-new")  # old and new, for a while
    ingress = await start_ingress(store, AppConfig(), settings=rotating, dispatch=None, flows=list(flow_names()))
    try:
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            for token, status in ((TOKEN, 200), ("tok-new", 200), ("tok-newer", 401), (",", 401)):
                r = await client.post("/segment", json=msg, headers=dict(signed, Authorization=f"Bearer {token}"))
                assert r.status_code == status, (token, r.text)
    finally:
        await ingress.stop()
        await store.close()


def test_token_comes_from_env_then_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ReceiverSettings.from_env().segment_token is None
    assert ReceiverSettings.from_env(config_token="from-config").segment_token == "from-config"
    monkeypatch.setenv("SEGMENT_WEBHOOK_TOKEN", "from-env")
    assert ReceiverSettings.from_env(config_token="from-config").segment_token == "from-env"
    config = AppConfig.from_document({"segment": {"webhook_token": "yaml-token"}})
    assert config.segment.webhook_token.get_secret_value() == "yaml-token"
    assert "webhook_token" not in str(config.mapping_document())  # a secret: never saved in the mapping block


async def test_without_token_start_warns_and_deletes_are_logged_redacted_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    ingress = await start_ingress(
        store, AppConfig(), settings=ReceiverSettings(segment_secret=SECRET), dispatch=None, flows=list(flow_names())
    )
    try:
        assert "SEGMENT_WEBHOOK_TOKEN" in caplog.text and "first event" in caplog.text
        first = {"type": "identify", "messageId": "m1", "userId": "u1"}
        smuggled = {"type": "delete", "messageId": "d1", "userId": USER}
        body = ("[" + ",".join(json.dumps(m, separators=(",", ":")) for m in (first, smuggled)) + "]").encode()
        async with httpx.AsyncClient(base_url=ingress.url) as client:
            r = await client.post("/segment", content=body, headers={"X-Signature": segment_signature(SECRET, first)})
            assert r.status_code == 200, r.text
            health = (await client.get("/healthz")).json()
        assert health["deletes"] == 1 and health["unsigned_deletes"] == 1, health
        assert "delete" in caplog.text and USER not in caplog.text
    finally:
        await ingress.stop()
        await store.close()
    caplog.clear()
    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    ingress = await start_ingress(
        store,
        AppConfig(),
        settings=ReceiverSettings(segment_secret=SECRET, segment_token=TOKEN),
        dispatch=None,
        flows=list(flow_names()),
    )
    try:
        assert "SEGMENT_WEBHOOK_TOKEN" not in caplog.text
    finally:
        await ingress.stop()
        await store.close()
