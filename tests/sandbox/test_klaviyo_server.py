"""Sandbox server and CLI: JSON line, credentials, port errors, middleware wiring, engagement webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from klaviyo_segment.devkit.sandbox.segment.serve import serving
from klaviyo_segment.devkit.sandbox.server import Sandbox, SandboxOptions
from klaviyo_segment.errors import ConfigError
from tests.fixtures.sandbox import klaviyo_headers

CONTRACT_KEYS = {
    "klaviyo",
    "segment",
    "klaviyo_api_key",
    "klaviyo_webhook_secret",
    "segment_write_key",
    "segment_shared_secret",
}


def test_info_has_contract_keys_and_seeded_credentials(sandbox: Sandbox) -> None:
    info = sandbox.info()
    assert set(info) == CONTRACT_KEYS
    assert info["klaviyo"].startswith("http://127.0.0.1:") and not info["klaviyo"].endswith("/api")
    assert info["klaviyo_api_key"].startswith("pk_")
    same, other = Sandbox(SandboxOptions(seed=0)), Sandbox(SandboxOptions(seed=1))
    assert same.klaviyo_api_key == sandbox.klaviyo_api_key != other.klaviyo_api_key
    r = httpx.post(
        f"{info['segment']}/v1/track", auth=(info["segment_write_key"], ""), json={"userId": "u1", "event": "Ping"}
    )
    assert r.status_code == 200


def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            Sandbox(SandboxOptions(port_klaviyo=busy.getsockname()[1])).start()


def test_scopes_option_restricts_the_printed_key(sandbox_factory: Any) -> None:
    box = sandbox_factory(rate_limits="off", scopes=["events:write"])
    headers = klaviyo_headers(box.klaviyo_api_key)
    assert httpx.get(f"{box.klaviyo_url}/api/profiles", headers=headers).status_code == 403


def test_rate_limits_wired_headers_and_429(sandbox_factory: Any) -> None:
    box = sandbox_factory(rate_limits="on")
    headers = klaviyo_headers(box.klaviyo_api_key)
    with httpx.Client(base_url=box.klaviyo_url, headers=headers) as client:
        first = client.get("/api/accounts")
        assert first.status_code == 200 and first.headers["RateLimit-Limit"] == "15"
        statuses = [client.get("/api/accounts").status_code for _ in range(3)]
        assert 429 in statuses
        assert client.get("/__sandbox/stats").json()["throttled"]["get_accounts"] >= 1
        client.post("/__sandbox/config", json={"rate_limits": "off"}).raise_for_status()
        assert client.get("/api/accounts").status_code == 200


def test_faults_configurable_at_runtime(sandbox_factory: Any) -> None:
    box = sandbox_factory(rate_limits="off", faults="get_accounts:503=1")
    with httpx.Client(base_url=box.klaviyo_url, headers=klaviyo_headers(box.klaviyo_api_key)) as client:
        assert client.get("/api/accounts").status_code == 503
        client.post("/__sandbox/config", json={"faults": None}).raise_for_status()
        assert client.get("/api/accounts").status_code == 200
        assert client.get("/__sandbox/stats").json()["faults"]["503"] == 1


def test_engagement_is_stored_and_delivered_as_signed_webhook(klaviyo: httpx.Client, sandbox: Sandbox) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []
    arrived = threading.Event()

    async def hook(request: Request) -> Response:
        received.append((await request.body(), dict(request.headers)))
        arrived.set()
        return Response(status_code=200)

    with serving(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        klaviyo.post("/__sandbox/config", json={"webhook_url": f"{url}/hook"}).raise_for_status()
        r = klaviyo.post(
            "/__sandbox/engagement",
            json={
                "events": [
                    {"metric": "Opened Email", "email": "w@example.com", "properties": {"Subject": "Hi"}},
                    {"metric": "Clicked Email", "email": "w@example.com", "datetime": "2026-05-01T10:00:00Z"},
                ]
            },
        )
    assert r.status_code == 200 and r.json()["webhook_status"] == 200 and arrived.is_set()
    body, headers = received[0]
    expected = hmac.new(
        sandbox.klaviyo_webhook_secret.encode(), body + headers["klaviyo-timestamp"].encode(), hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(headers["klaviyo-signature"], expected)
    doc = json.loads(body)
    assert doc["meta"]["klaviyo_webhook_id"] == headers["klaviyo-webhook-id"]
    assert [d["topic"] for d in doc["data"]] == ["event:klaviyo.opened_email", "event:klaviyo.clicked_email"]
    assert [d["external_id"] for d in doc["data"]] == r.json()["event_ids"]
    assert doc["data"][0]["payload"]["attributes"]["event_properties"]["Subject"] == "Hi"
    events = klaviyo.get("/api/events", params={"include": "metric"}).json()
    assert sorted(e["id"] for e in events["data"]) == sorted(r.json()["event_ids"])
    assert {m["attributes"]["name"] for m in events["included"]} == {"Opened Email", "Clicked Email"}


def test_engagement_rejects_unknown_metric(klaviyo: httpx.Client) -> None:
    r = klaviyo.post("/__sandbox/engagement", json={"events": [{"metric": "Danced", "email": "x@example.com"}]})
    assert r.status_code == 400


def test_cli_prints_json_line_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "klaviyo_segment", "sandbox", "--rate-limits", "off", "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) == CONTRACT_KEYS
        assert info["klaviyo_api_key"] == Sandbox(SandboxOptions(seed=7)).klaviyo_api_key
        r = httpx.get(f"{info['klaviyo']}/api/accounts", headers=klaviyo_headers(info["klaviyo_api_key"]))
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(
    "args",
    [
        ["--rate-limits", "fast"],
        ["--faults", "nope:500=0.5"],
        ["--port-klaviyo", "70000"],
        ["--webhook-url", "ftp://x"],
    ],
)
def test_cli_bad_flags_exit_2(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "klaviyo_segment", "sandbox", *args], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2, proc.stderr


def test_cli_port_in_use_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "klaviyo_segment", "sandbox", "--port-segment", str(busy.getsockname()[1])],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 2 and "cannot listen" in proc.stderr
