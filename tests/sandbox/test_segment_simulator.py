"""Delivery simulator against a real receiver that verifies X-Signature and scripts its answers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from klaviyo_segment.devkit.sandbox.segment.serve import serve_in_thread
from klaviyo_segment.devkit.sandbox.segment.simulator import deliver, is_retryable, js_json_stringify, sign
from tests.fixtures.clock import VirtualClock

SECRET = "s3cr3t-shared"


@dataclass
class Receiver:
    """Answers per first messageId from a script (``"slow"`` = answer after the client's timeout)."""

    script: dict[str, list[int | str]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw)
        first = body[0] if isinstance(body, list) else body
        # independent of the code under test: Python's compact, non-ASCII-escaping dumps of the first event
        signed = (
            raw if not isinstance(body, list) else json.dumps(first, separators=(",", ":"), ensure_ascii=False).encode()
        )
        expected = hmac.new(SECRET.encode(), signed, hashlib.sha1).hexdigest()
        self.requests.append(
            {
                "body": body,
                "headers": dict(request.headers),
                "signature_ok": hmac.compare_digest(expected, request.headers.get("x-signature", "")),
            }
        )
        steps = self.script.get(first["messageId"], [])
        step = steps.pop(0) if steps else 200
        if step == "slow":  # well past the client's timeout, which itself leaves a busy machine room
            await asyncio.sleep(3.0)
            step = 200
        return Response(status_code=int(step))


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()
    base_url, stop = serve_in_thread(Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])]))
    yield f"{base_url}/hook", receiver
    stop()


@pytest.fixture()
def receiver(served: tuple[str, Receiver]) -> Receiver:
    served[1].script.clear()
    served[1].requests.clear()
    return served[1]


def _messages(n: int, prefix: str = "m") -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "messageId": f"{prefix}{i}",
            "userId": f"u{i}",
            "event": "Order Completed",
            "properties": {"name": "Café Crème ☕", "price": 19.99, "quantity": 2},
        }
        for i in range(n)
    ]


FAST = {"backoff_base": 0.01, "seed": 7}


async def test_single_events_are_signed_over_the_exact_body(served: tuple[str, Receiver], receiver: Receiver) -> None:
    report = await deliver(served[0], _messages(5), SECRET, **FAST)
    assert sorted(report.acknowledged) == [f"m{i}" for i in range(5)] and report.given_up == {}
    assert len(receiver.requests) == 5 and all(r["signature_ok"] for r in receiver.requests)
    headers = receiver.requests[0]["headers"]
    assert headers["user-agent"] == "Segment (Actions)" and headers["content-type"] == "application/json"
    assert report.attempts == 5 and report.retries == 0 and len(report.latencies) == 5
    assert report.summary()["acknowledged"] == 5 and 0 < report.p50 <= report.p95


async def test_batches_are_arrays_signed_over_first_event(served: tuple[str, Receiver], receiver: Receiver) -> None:
    report = await deliver(served[0], _messages(7), SECRET, batch_size=3, concurrency=1, **FAST)
    assert [len(r["body"]) for r in receiver.requests] == [3, 3, 1]
    assert all(r["signature_ok"] for r in receiver.requests)
    assert receiver.requests[0]["headers"]["x-signature"] == sign(SECRET, _messages(7)[0])
    assert receiver.requests[0]["headers"]["x-signature"] != sign(SECRET, receiver.requests[0]["body"])
    assert len(report.acknowledged) == 7


@pytest.mark.parametrize(
    "first,retried",
    [(500, True), (429, True), (503, True), (408, True), (423, True), (400, False), (501, False), (404, False)],
)
async def test_retry_classification(
    served: tuple[str, Receiver], receiver: Receiver, first: int, retried: bool
) -> None:
    receiver.script["m0"] = [first, 200]
    report = await deliver(served[0], _messages(1), SECRET, **FAST)
    if retried:
        assert report.acknowledged == ["m0"] and report.retries == 1 and len(receiver.requests) == 2
    else:
        assert report.given_up == {"m0": first} and report.attempts == 1 and len(receiver.requests) == 1


async def test_batch_given_up_marks_every_message(served: tuple[str, Receiver], receiver: Receiver) -> None:
    receiver.script["m0"] = [400]
    report = await deliver(served[0], _messages(4), SECRET, batch_size=2, concurrency=1, **FAST)
    assert report.given_up == {"m0": 400, "m1": 400} and sorted(report.acknowledged) == ["m2", "m3"]


async def test_attempts_are_bounded(served: tuple[str, Receiver], receiver: Receiver) -> None:
    receiver.script["m0"] = [503] * 10
    report = await deliver(served[0], _messages(1), SECRET, max_attempts=3, **FAST)
    assert report.given_up == {"m0": 503} and report.attempts == 3 and report.retries == 2


async def test_total_time_is_bounded(served: tuple[str, Receiver], receiver: Receiver) -> None:
    receiver.script["m0"] = [503] * 1000
    clock = VirtualClock()  # backoff sleeps move virtual time: the deadline is checked exactly, no waiting
    report = await deliver(
        served[0],
        _messages(1),
        SECRET,
        max_attempts=1000,
        max_seconds=0.5,
        backoff_base=0.05,
        seed=1,
        clock=clock,
        sleep=clock.sleep,
    )
    assert report.given_up == {"m0": 503} and 1 < report.attempts < 1000
    assert report.attempts == len(clock.sleeps) + 1 and sum(clock.sleeps) < 0.5  # no sleep past the deadline
    assert report.elapsed == pytest.approx(sum(clock.sleeps))


async def test_slow_endpoint_times_out_then_succeeds(served: tuple[str, Receiver], receiver: Receiver) -> None:
    receiver.script["m0"] = ["slow"]
    report = await deliver(served[0], _messages(1), SECRET, timeout=1.0, **FAST)
    assert report.acknowledged == ["m0"] and report.statuses.get("timeout") == 1 and report.retries == 1


async def test_connection_errors_are_retried_then_given_up() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    report = await deliver(f"http://127.0.0.1:{port}/hook", _messages(1), SECRET, max_attempts=2, **FAST)
    assert report.given_up == {"m0": "connection_error"} and report.attempts == 2


def test_retryable_statuses_follow_actions_core() -> None:
    assert [s for s in (400, 401, 404, 408, 409, 422, 423, 429, 500, 501, 502, 504, 511, 599) if is_retryable(s)] == [
        408,
        423,
        429,
        500,
        502,
        504,
        511,
        599,
    ]


@pytest.mark.parametrize(
    "value,expected",
    [  # expected strings are Node's JSON.stringify output
        ({"b": 1.0, "a": [True, None, -0.0]}, '{"b":1,"a":[true,null,0]}'),
        (
            [1e21, 1e-7, 1.5e-7, 1e16, 0.000001, 123e-20, 19.99, float("nan")],
            "[1e+21,1e-7,1.5e-7,10000000000000000,0.000001,1.23e-18,19.99,null]",
        ),
        ({"s": 'é\n\u2028\x7f\x00"\\☕'}, '{"s":"é\\n\u2028\x7f\\u0000\\"\\\\☕"}'),
        ("\ud800", '"\\ud800"'),
    ],
)
def test_js_json_stringify_matches_node(value: Any, expected: str) -> None:
    assert js_json_stringify(value) == expected


# -- `klaviyo-segment simulate` -------------------------------------------------------------------------------
def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from klaviyo_segment.cli.app import app

    return CliRunner().invoke(app, ["simulate", *args])


def test_cli_generated_stream_batched(served: tuple[str, Receiver], receiver: Receiver) -> None:
    result = _cli("--to", served[0], "--secret", SECRET, "--batch", "10", "--count", "45", "--seed", "3")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["sent"] == 45 and summary["acknowledged"] == 45 and summary["given_up"] == 0
    assert set(summary) == {"sent", "acknowledged", "given_up", "retries", "elapsed_s"}
    assert sorted(len(r["body"]) for r in receiver.requests) == [5, 10, 10, 10, 10]
    assert all(r["signature_ok"] for r in receiver.requests)
    assert "45/45" in result.stderr and SECRET not in result.output


def test_cli_replays_input_and_exits_1_when_given_up(
    served: tuple[str, Receiver], receiver: Receiver, tmp_path: Any
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in _messages(3, prefix="r")) + "\n\n", encoding="utf-8")
    receiver.script["r1"] = [400]
    receiver.script["r2"] = [500, 200]
    result = _cli("--to", served[0], "--secret", SECRET, "--input", str(path))
    assert result.exit_code == 1
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["sent"], summary["acknowledged"], summary["given_up"], summary["retries"]) == (3, 2, 1, 1)
    assert [r["body"]["messageId"] for r in receiver.requests].count("r2") == 2


@pytest.mark.parametrize("args", [["--batch", "-1"], ["--count", "0"], ["--timeout", "0"], ["--nope"]])
def test_cli_bad_flags_exit_2(served: tuple[str, Receiver], args: list[str]) -> None:
    assert _cli("--to", served[0], "--secret", SECRET, *args).exit_code == 2


def test_cli_bad_url_exit_2() -> None:
    assert _cli("--to", "ftp://127.0.0.1/x", "--secret", SECRET).exit_code == 2


def test_cli_missing_secret_exits_2_through_the_real_entry_point(tmp_path: Any) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "klaviyo_segment", "simulate", "--to", "http://127.0.0.1:9/x"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2 and proc.stdout == "" and "--secret" in proc.stderr


@pytest.mark.parametrize("case", ["missing_file", "bad_line", "not_object"])
def test_cli_unusable_input_is_a_config_error(case: str, tmp_path: Any) -> None:
    """ConfigError is what ``app.main`` turns into exit 2 (checked end to end in the test above)."""
    from klaviyo_segment.errors import ConfigError

    path = tmp_path / "in.jsonl"
    if case != "missing_file":
        path.write_text('{"type":"track"}\n' + ("{oops\n" if case == "bad_line" else "[1]\n"), encoding="utf-8")
    result = _cli("--to", "http://127.0.0.1:9/x", "--secret", SECRET, "--input", str(path))
    assert isinstance(result.exception, ConfigError)
    assert ("cannot read" if case == "missing_file" else "line 2") in str(result.exception)
