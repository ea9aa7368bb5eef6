"""The streaming reader ``run`` stages files with, and the staged batches' isolation from serve's dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from klaviyo_segment import inputs
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.runtime import MALFORMED


def test_json_lines_stream_with_a_malformed_line_as_one_message(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"messageId": "a"}\n\n{not json\n{"messageId": "b"}\n', encoding="utf-8")
    got = list(inputs.iter_messages(path))
    assert [m for m, _ in got][0] == {"messageId": "a"} and got[2][0] == {"messageId": "b"}
    assert set(got[1][0]) == {MALFORMED} and got[1][0][MALFORMED].startswith("line 3:")
    offsets = [n for _, n in got]
    assert offsets == sorted(offsets) and offsets[-1] == path.stat().st_size


def test_json_array_streams_across_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "READ_SIZE", 5)  # every element, string and multi-byte character is cut by reads
    messages = [{"messageId": f"m{i}", "name": "Zoë 😀" * i} for i in range(50)] + [12345678, "x", None]
    path = tmp_path / "in.json"
    path.write_text("  " + json.dumps(messages, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    got = list(inputs.iter_messages(path))
    assert [m for m, _ in got] == messages
    assert inputs.read_messages(path) == messages
    assert list(inputs.iter_messages(_write(tmp_path, "[ ]"))) == []


@pytest.mark.parametrize("text", ['[{"a": 1}, {"b"', '[{"a": 1} {"b": 2}]', "[1, 2] trailing", "[1,"])
def test_a_broken_json_array_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="starts a JSON array but is not valid JSON"):
        list(inputs.iter_messages(_write(tmp_path, text)))


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read input file"):
        list(inputs.iter_messages(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(ConfigError, match="UnicodeDecodeError"):
        list(inputs.iter_messages(bad))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.json"
    path.write_text(text, encoding="utf-8")
    return path


async def test_staged_batches_are_invisible_to_the_dispatcher_until_taken_over(tmp_path: Path) -> None:
    from klaviyo_segment.store import STAGED_PREFIX, Store

    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    try:
        owner = f"{STAGED_PREFIX}test"
        staged = await store.stage("forward-track", [{"messageId": "m1"}, {"messageId": "m2"}], owner, 600)
        assert await store.claim("serve-worker", 600, limit=10) == []  # serve's inline dispatcher
        assert await store.pending_batches() == []  # serve's sweeper
        assert await store.lease([staged], "someone", 600) == []  # leased: not claimable by id either
        assert await store.renew_staged([staged], owner, 600) == 1
        taken = await store.take_over_staged([staged], "flow-run-1", 600)
        assert [b.id for b in taken] == [staged] and [m["messageId"] for m in taken[0].messages] == ["m1", "m2"]
        assert await store.take_over_staged([staged], "flow-run-2", 600) == []  # now owned by the flow run
        assert await store.complete(staged, "flow-run-1")
        other = await store.stage("forward-track", [{"messageId": "m3"}], owner, 600)
        await store.discard_staged([other], owner)
        assert await store.get_batches([other]) == []
    finally:
        await store.close()


async def test_expired_staged_batches_fall_back_to_serve(tmp_path: Path) -> None:
    """If ``run`` dies, its staging lease expires and the batch is an ordinary claimable one: nothing is lost."""
    from klaviyo_segment.store import STAGED_PREFIX, Store

    store = await Store.open(f"sqlite:///{tmp_path}/state.db")
    try:
        staged = await store.stage("forward-track", [{"messageId": "m1"}], f"{STAGED_PREFIX}dead", -1)
        assert [b.id for b in await store.pending_batches()] == [staged]
        assert [b.id for b in await store.claim("serve-worker", 600, limit=10)] == [staged]
    finally:
        await store.close()
