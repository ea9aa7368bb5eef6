"""A worker process for the concurrency test: claims batches from a shared store and records what it processed.

Usage: pg_worker.py URL OWNER LEASE_SECONDS MODE   (MODE: ``work`` drains the inbox; ``hang`` leases one batch and
blocks forever, to be SIGKILLed mid-lease). It prints ``ready`` and waits for a line on stdin before claiming, so
the test starts both workers at the same moment; each processed batch id is printed as ``done <id>``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from klaviyo_segment.store import Store

DEADLINE_S = 30.0


async def main(url: str, owner: str, lease_seconds: float, mode: str) -> int:
    async with await Store.open(url) as store:
        print("ready", flush=True)
        sys.stdin.readline()
        if mode == "hang":
            [batch] = await store.claim(owner, lease_seconds, limit=1)
            print(f"leased {batch.id}", flush=True)
            sys.stdin.readline()  # never answered: the test kills us here
            return 0
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            batches = await store.claim(owner, lease_seconds, limit=1)
            if not batches:
                if not await store.backlog():
                    return 0
                await asyncio.sleep(0.05)  # another worker holds the rest; its lease may still expire
                continue
            for batch in batches:
                await asyncio.sleep(0.01)  # "work", so the two workers interleave
                if await store.complete(batch.id, owner, "done", {"sent": len(batch.messages)}):
                    print(f"done {batch.id}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])))
