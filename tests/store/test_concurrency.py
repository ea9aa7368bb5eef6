"""Two worker processes share one store: every batch is processed by exactly one of them (PostgreSQL and SQLite),
and a worker killed mid-lease loses nothing: the survivor finishes its batch once the lease expires (PostgreSQL)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_segment.store import Store
from tests.fixtures.postgres import create_database

WORKER = Path(__file__).with_name("pg_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _spawn(url: str, owner: str, lease: float, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), url, owner, str(lease), mode],
        cwd=REPO,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
    return proc


def _go(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def _finish(proc: subprocess.Popen[str]) -> set[str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    return {line.split()[1] for line in out.splitlines() if line.startswith("done ")}


async def _fill(url: str, count: int) -> tuple[Store, list[str]]:
    store = await Store.open(url)
    ids = [
        (await store.accept([{"messageId": f"m{i}"}], key=lambda m: m["messageId"], route=lambda m: ["f"])).batches["f"]
        for i in range(count)
    ]
    return store, ids


async def test_each_batch_processed_by_exactly_one_worker(store_url: str) -> None:
    url = store_url
    store, ids = await _fill(url, 60)
    try:
        a, b = _spawn(url, "A", 30, "work"), _spawn(url, "B", 30, "work")
        _go(a, b)
        done_a, done_b = _finish(a), _finish(b)
        assert not done_a & done_b and done_a | done_b == set(ids)
        assert done_a and done_b  # both really competed
        async with store.engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT status, attempts, lease_owner FROM ks_inbox_batches"))).all()
        assert {(r.status, r.attempts) for r in rows} == {("done", 1)}
        assert sum(r.lease_owner == "A" for r in rows) == len(done_a)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_killed_worker_batch_is_finished_by_the_other_after_expiry(postgres_url: str) -> None:
    url = create_database(postgres_url)
    store, ids = await _fill(url, 5)
    try:
        victim = _spawn(url, "victim", 1.0, "hang")
        _go(victim)
        assert victim.stdout is not None
        leased = victim.stdout.readline().split()[1]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        survivor = _spawn(url, "survivor", 30, "work")
        _go(survivor)
        assert _finish(survivor) == set(ids)  # including the victim's batch, once its 1 s lease expired
        [info] = await store.get_batches([leased])
        assert (info.status, info.attempts, info.lease_owner) == ("done", 2, "survivor")
        assert await store.backlog() == {}
    finally:
        await store.close()
