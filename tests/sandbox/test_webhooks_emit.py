"""Outgoing system webhooks: body shape, HTTP-date timestamp, a signature an independent HMAC accepts, retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from klaviyo_segment.devkit.sandbox.klaviyo.webhooks import TOPICS, build_delivery, emit_webhook, record_for_event

SECRET = "whsec_0123456789abcdef"
EVENT = {
    "type": "event",
    "id": "EV1",
    "attributes": {"timestamp": 1776138612, "event_properties": {}},
    "relationships": {"metric": {"data": {"type": "metric", "id": "M1"}}},
}


class Receiver:
    """A real HTTP endpoint (stdlib server on 127.0.0.1) answering a scripted list of statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/klaviyo"


@pytest.fixture
def receiver_factory() -> Iterator[type[Receiver]]:
    started: list[Receiver] = []

    def start(statuses: list[int]) -> Receiver:
        receiver = Receiver(statuses)
        threading.Thread(target=receiver.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        started.append(receiver)
        return receiver

    yield start  # type: ignore[misc]
    for receiver in started:
        receiver.server.shutdown()
        receiver.server.server_close()


def independent_signature(body: bytes, timestamp: str) -> str:
    return hmac.new(SECRET.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()


def test_topics_cover_the_engagement_metrics() -> None:
    assert TOPICS["Received Email"] == "event:klaviyo.received_email"
    assert TOPICS["Unsubscribed"] == "event:klaviyo.unsubscribed"
    assert TOPICS["Marked Email as Spam"] == "event:klaviyo.marked_email_as_spam"
    assert {"Opened Email", "Clicked Email", "Bounced Email"} <= set(TOPICS)
    assert record_for_event(EVENT, "Opened Email") == {
        "external_id": "EV1",
        "payload": EVENT,
        "topic": "event:klaviyo.opened_email",
    }
    with pytest.raises(ValueError, match="no webhook topic"):
        record_for_event(EVENT, "Placed Order")


def test_build_delivery_shape_and_signature() -> None:
    now = datetime(2026, 4, 14, 3, 50, 12, 999, tzinfo=UTC)
    records = [record_for_event(EVENT, "Clicked Email")]
    body, headers = build_delivery(records, secret=SECRET, webhook_id="WH1", account_id="ACC1", now=now)
    assert headers["Content-Type"] == "application/json"
    assert headers["Klaviyo-Webhook-Id"] == "WH1"
    assert headers["Klaviyo-Timestamp"] == "Tue, 14 Apr 2026 03:50:12 GMT"
    assert headers["Klaviyo-Signature"] == independent_signature(body, headers["Klaviyo-Timestamp"])
    doc = json.loads(body)
    assert doc["data"] == [{"external_id": "EV1", "payload": EVENT, "topic": "event:klaviyo.clicked_email"}]
    assert doc["meta"] == {
        "klaviyo_account_id": "ACC1",
        "klaviyo_webhook_id": "WH1",
        "timestamp": "2026-04-14T03:50:12+00:00",
        "version": "2026-07-15",
    }
    same, same_headers = build_delivery(records, secret=SecretStr(SECRET), webhook_id="WH1", account_id="ACC1", now=now)
    assert same == body and same_headers == headers
    _, other = build_delivery(records, secret=SECRET + "x", webhook_id="WH1", account_id="ACC1", now=now)
    assert other["Klaviyo-Signature"] != headers["Klaviyo-Signature"]


async def test_emit_delivers_a_verifiable_request(receiver_factory: type[Receiver]) -> None:
    receiver = receiver_factory([])
    records = [record_for_event(EVENT, "Unsubscribed")]
    assert await emit_webhook(receiver.url, SECRET, "WH1", "ACC1", records) == 200
    ((headers, body),) = receiver.received
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", headers["klaviyo-timestamp"])
    assert hmac.compare_digest(headers["klaviyo-signature"], independent_signature(body, headers["klaviyo-timestamp"]))
    assert json.loads(body)["meta"]["klaviyo_webhook_id"] == headers["klaviyo-webhook-id"] == "WH1"


async def test_emit_retries_5xx_but_not_4xx(receiver_factory: type[Receiver]) -> None:
    records = [record_for_event(EVENT, "Bounced Email")]
    flaky = receiver_factory([503, 500])
    assert await emit_webhook(flaky.url, SECRET, "WH1", "ACC1", records, backoff=0.01) == 200
    assert len(flaky.received) == 3
    rejecting = receiver_factory([400])
    assert await emit_webhook(rejecting.url, SECRET, "WH1", "ACC1", records, backoff=0.01) == 400
    assert len(rejecting.received) == 1
    down = receiver_factory([503] * 10)
    assert await emit_webhook(down.url, SECRET, "WH1", "ACC1", records, attempts=3, backoff=0.01) == 503
    assert len(down.received) == 3


async def test_emit_gives_up_on_connection_errors() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status = await emit_webhook(
        f"http://127.0.0.1:{port}/",
        SECRET,
        "WH1",
        "ACC1",
        [record_for_event(EVENT, "Received Email")],
        attempts=2,
        backoff=0.01,
    )
    assert status == 0
