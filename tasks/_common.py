"""What every Klaviyo task shares. The operations themselves live in ``klaviyo_segment.services``; a task
module only wraps them in ``@task`` so each call is a Prefect task run."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from klaviyo_segment import run_logs

TAGS = ["klaviyo"]
#: Every Klaviyo task: the client retries transient errors itself, and its arguments (a client, batches)
#: are neither hashable nor worth caching.
TASK_OPTIONS: dict[str, Any] = {"retries": 0, "tags": TAGS, "cache_policy": NO_CACHE}

run_logs.route_to_prefect()  # tasks used in a user's own flow: the client's warnings reach that run's logs
