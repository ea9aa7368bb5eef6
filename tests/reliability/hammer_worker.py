"""One worker process of the cross-worker rate-limit test: sends bulk event requests as fast as its pacer allows.

Run as ``python -m tests.reliability.hammer_worker BASE_URL SECONDS CONCURRENCY TAG``; the API key comes from
``KLAVIYO_API_KEY`` so it never appears in a process listing. Prints one JSON line of figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
from klaviyo_segment.builders.bulk_events import bulk_create_events_body
from klaviyo_segment.clients.klaviyo import KlaviyoClient
from klaviyo_segment.errors import KlaviyoAPIError


async def main(base_url: str, seconds: float, concurrency: int, tag: str) -> dict[str, object]:
    creds = KlaviyoCredentials(api_key=os.environ["KLAVIYO_API_KEY"], base_url=base_url)
    sent = failed = 0
    began = time.time()  # epoch, comparable across processes: the test rates requests over the real window
    deadline = time.monotonic() + seconds

    async with KlaviyoClient(creds, max_attempts=1) as client:
        pacer_kind = type(client.pacer).__name__

        async def loop(n: int) -> None:
            nonlocal sent, failed
            i = 0
            while time.monotonic() < deadline:
                i += 1
                plan = bulk_create_events_body(
                    [{"metric": "Hammer", "unique_id": f"{tag}-{n}-{i}", "profile": {"external_id": f"{tag}-{n}"}}]
                )
                try:
                    await client.request("bulk_create_events", json=plan.body)
                    sent += 1
                except KlaviyoAPIError:
                    failed += 1

        await asyncio.gather(*(loop(n) for n in range(concurrency)))
    return {"tag": tag, "ok": sent, "failed": failed, "pacer": pacer_kind, "began": began, "ended": time.time()}


if __name__ == "__main__":
    url, secs, conc, worker_tag = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    print(json.dumps(asyncio.run(main(url, secs, conc, worker_tag))), flush=True)
