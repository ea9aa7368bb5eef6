"""``mapping``: compiled templates on one core (no I/O), messages/s, plus the polars backfill path in rows/s.

Mapping is the CPU cost every message pays in every flow; if it were slower than the API ceiling, the ceiling
could never be reached. Inputs are built before the clock starts so only ``template.apply`` is timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from klaviyo_segment.bench.runner import BenchResult, Options, identify_messages, track_messages

TARGETS = {"track-default": 50_000.0, "identify-default": 20_000.0, "ecommerce": None}
DEFAULT_MESSAGES = 100_000
QUICK_MESSAGES = 5_000


def ecommerce_messages(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Order Completed with products: the ecommerce template's heaviest case (one event per product too)."""
    base = track_messages(min(count, 200), seed, event="Order Completed")
    products = [
        {
            "product_id": f"P{i}",
            "sku": f"SKU-{i}",
            "name": f"Thing {i}",
            "price": 10.0 + i,
            "quantity": 1 + i % 3,
            "category": "bench",
        }
        for i in range(3)
    ]
    return [
        {
            **base[i % len(base)],
            "messageId": f"bench-{seed}-o{i}",
            "properties": {
                "order_id": f"O{i}",
                "total": 42.5,
                "revenue": 40.0,
                "currency": "USD",
                "products": products,
            },
        }
        for i in range(count)
    ]


def _rate(fn: Callable[[dict[str, Any]], Any], messages: list[dict[str, Any]]) -> tuple[float, int]:
    """(messages/s, messages that produced a mapping) over one pass, after a small warm-up."""
    for message in messages[:200]:
        fn(message)
    mapped = 0
    started = time.perf_counter()
    for message in messages:
        if fn(message):
            mapped += 1
    return len(messages) / max(time.perf_counter() - started, 1e-9), mapped


def run(options: Options) -> BenchResult:
    from klaviyo_segment.mapping import compile_template

    count = options.messages or (QUICK_MESSAGES if options.quick else DEFAULT_MESSAGES)
    result = BenchResult(bench="mapping")
    inputs = {
        "track-default": track_messages(count, options.seed),
        "identify-default": identify_messages(count, options.seed),
        "ecommerce": ecommerce_messages(count, options.seed),
    }
    for name, messages in inputs.items():
        template = compile_template(name)
        rate, mapped = _rate(template.apply, messages)
        result.add(
            f"{name} ({count:,} msgs)",
            rate,
            "msgs/s",
            TARGETS[name],
            note=f"{mapped} mapped" if mapped != count else "",
        )
        if mapped == 0:
            result.notes.append(f"{name}: no message mapped; the figure measures rejection, not mapping")
    result.add(f"polars identify frame ({count:,} rows)", _frame_rate(count, options.seed), "rows/s")
    return result


def _frame_rate(count: int, seed: int) -> float:
    """The backfill path: a frame of flat columns (as read from CSV) through ``map_frame``."""
    import polars as pl

    from klaviyo_segment.mapping import compile_template
    from klaviyo_segment.mapping.frame import map_frame

    frame = pl.DataFrame(
        {
            "user_id": [f"bench-user-{seed}-{i}" for i in range(count)],
            "email": [f"bench{seed}.{i}@example.com" for i in range(count)],
            "first_name": ["Ada"] * count,
            "last_name": ["Lovelace"] * count,
            "phone": [f"(201) 555-{i % 10_000:04d}" for i in range(count)],
            "address.city": ["Boston"] * count,
            "address.country": ["USA"] * count,
            "plan": ["pro"] * count,
        }
    )
    template = compile_template("identify-default")
    started = time.perf_counter()
    rows = sum(1 for _ in map_frame(template, frame))
    return rows / max(time.perf_counter() - started, 1e-9)
