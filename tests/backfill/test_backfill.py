"""Backfill against the sandbox over real HTTP: formats, bad rows, rejects, resume after a kill, reruns."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from klaviyo_segment.backfill import BackfillOptions, backfill_file, checkpoint_name, content_hash, purge_rejects
from klaviyo_segment.config import AppConfig
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.store import Store
from tests.backfill.conftest import Env

ROWS: list[dict[str, Any]] = [
    {
        "userId": "u1",
        "email": " Ann@Example.com ",
        "phone": "(415) 555-2671",
        "firstName": "Ann",
        "address.city": "Oslo",
        "plan": "pro",
    },
    {"userId": None, "email": None, "phone": None, "firstName": "Ghost", "address.city": None, "plan": "free"},
    {"userId": "u3", "email": None, "phone": "not a phone", "firstName": "Cy", "address.city": None, "plan": None},
    {"userId": None, "email": "bad-email", "phone": None, "firstName": None, "address.city": None, "plan": None},
    {"userId": "u5", "email": "e@example.com", "phone": None, "firstName": None, "address.city": None, "plan": "pro"},
]


def _run(env: Env, path: Path, fmt: str | None = None, **opts: Any) -> Any:
    options = BackfillOptions(poll_interval=0.05, **opts)
    return asyncio.run(backfill_file(path, raw_config=env.raw_config, fmt=fmt, options=options))


def _rejects(path: Path) -> dict[int, str]:
    with (path.parent / (path.name + ".rejects.csv")).open(newline="") as fh:
        return {int(r["row"]): r["reason"] for r in csv.DictReader(fh)}


def _by_external_id(env: Env) -> dict[str, dict[str, Any]]:
    return {
        p["attributes"]["external_id"]: p["attributes"] for p in env.profiles() if p["attributes"].get("external_id")
    }


def test_csv_bad_rows_and_rejects(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    pl.DataFrame(ROWS).write_csv(path)
    report = _run(env, path)
    assert (report.rows, report.sent, report.skipped, report.failed) == (5, 3, 1, 1)
    assert report.exit_code == 1 and report.warnings == 1  # the bad phone: dropped, row still imported
    people = _by_external_id(env)
    assert people["u1"]["email"] == "ann@example.com" and people["u1"]["phone_number"] == "+14155552671"
    assert people["u1"]["location"]["city"] == "Oslo" and people["u1"]["properties"]["plan"] == "pro"
    assert people["u3"].get("phone_number") is None and people["u3"]["first_name"] == "Cy"
    rejects = _rejects(path)
    assert set(rejects) == {1, 3}
    assert rejects[1].startswith("no email, phone or userId")
    assert rejects[3].startswith("klaviyo: invalid")


def test_parquet_and_jsonl_with_traits_column(env: Env, tmp_path: Path) -> None:
    parquet = tmp_path / "users.parquet"
    pl.DataFrame(ROWS[:1]).write_parquet(parquet)
    jsonl = tmp_path / "users.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"user_id": "j1", "traits": {"email": "J1@Example.com", "lastName": "Lind", "tier": "gold"}},
                {"anonymous_id": "a-only", "traits": {"plan": "x"}},
            ]
        )
        + "\n"
    )
    assert _run(env, parquet).sent == 1
    report = _run(env, jsonl)
    assert (report.sent, report.skipped, report.exit_code) == (1, 1, 0)
    people = _by_external_id(env)
    assert people["u1"]["first_name"] == "Ann"
    assert people["j1"]["email"] == "j1@example.com" and people["j1"]["last_name"] == "Lind"
    assert people["j1"]["properties"] == {"tier": "gold"}
    assert len(env.jobs()) == 2


@pytest.mark.slow
def test_rerun_sends_nothing_and_force_resends(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    pl.DataFrame(ROWS).write_csv(path)
    first = env.run_cli("--input", str(path))
    assert first.returncode == 1, first.stderr  # one row failed at Klaviyo
    assert "rejects.csv" in first.stdout
    second = env.run_cli("--input", str(path))
    assert second.returncode == 0 and "already backfilled" in second.stdout
    assert len(env.jobs()) == 1
    forced = env.run_cli("--input", str(path), "--force")
    assert forced.returncode == 1 and len(env.jobs()) == 2


def test_bad_flags_and_unreadable_input_exit_2(env: Env, tmp_path: Path) -> None:
    odd = tmp_path / "users.txt"
    odd.write_text("email\na@b.com\n")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    for path, fmt in ((tmp_path / "missing.csv", None), (odd, None), (odd, "xml"), (broken, None)):
        with pytest.raises(ConfigError):
            _run(env, path, **({"fmt": fmt} if fmt else {}))
    assert env.run_cli("--input", str(broken)).returncode == 2  # ConfigError -> exit 2 through the CLI
    assert env.jobs() == {}


def _checkpoint(env: Env, path: Path) -> dict[str, Any] | None:
    template = AppConfig().compiled().identify.templates[0]

    async def read() -> dict[str, Any] | None:
        store = await Store.open(env.store_url)
        try:
            return await store.get_checkpoint(checkpoint_name(content_hash(path), template, []))
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.slow
def test_resume_after_kill_never_sends_a_chunk_twice(sandbox_factory: Any, tmp_path: Path) -> None:
    import httpx

    box = sandbox_factory(rate_limits="off", import_delay=0.3)  # each job takes ~0.6 s: room to kill mid-run
    with httpx.Client(base_url=box.klaviyo_url) as client:
        env = Env(box, client, tmp_path)
        path = tmp_path / "many.csv"
        pl.DataFrame(
            {"userId": [f"k{i}" for i in range(40)], "email": [f"k{i}@example.com" for i in range(40)]}
        ).write_csv(path)
        args = ("--input", str(path), "--max-per-job", "10", "--jobs-in-flight", "1")
        proc = subprocess.Popen(env.cli(*args), env=env.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        state = None
        while time.monotonic() < deadline:
            state = _checkpoint(env, path) if (tmp_path / "state.db").exists() else None
            # a chunk done and the next one's job id recorded: the kill lands while that job is in flight
            if state and state["done"] and set(state["jobs"]) - set(state["done"]):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert state and state["done"] and state["status"] == "running"
        assert len(env.jobs()) < 4  # killed before every chunk was sent
        rerun = env.run_cli(*args)
        assert rerun.returncode == 0, rerun.stderr
        summary = json.loads(rerun.stdout.strip().splitlines()[-1])
        assert summary["jobs_resumed"] == 1 and summary["resumed_rows"] >= 10
        jobs = env.jobs()
        assert len(jobs) == 4 and set(jobs.values()) == {"complete"}  # 4 chunks, each sent exactly once
        assert len(env.profiles()) == 40
        assert _checkpoint(env, path)["status"] == "complete"  # type: ignore[index]


def test_purge_removes_a_person_from_rejects(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    pl.DataFrame(ROWS).write_csv(path)
    _run(env, path)
    assert 3 in _rejects(path)

    async def purge() -> int:
        store = await Store.open(env.store_url)
        try:
            return await purge_rejects(store, {"email": "BAD-EMAIL"})
        finally:
            await store.close()

    assert asyncio.run(purge()) == 1
    assert set(_rejects(path)) == {1}
