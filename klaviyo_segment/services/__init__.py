"""Service layer: the Klaviyo/Segment operations themselves, as plain async functions.

Layering: ``clients`` (HTTP, retries, pacing) -> ``services`` (one operation family per module: bodies, chunking,
partial-failure resend, per-item results) -> ``tasks`` (thin Prefect ``@task`` wrappers, one service call each)
-> ``flows``. Code that needs an operation without a Prefect task run (backfill, membership, flowkit, the
receiver, benchmarks) imports it from here, never from a task module. Nothing here imports tasks or flows.
"""
