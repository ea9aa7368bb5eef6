"""``validation``: the Klaviyo emulator's request-body check on one core, reference ``jsonschema`` against the
compiled check (devkit/sandbox/klaviyo/fastcheck.py), on a 1,000-event bulk body and a 1,000-profile import.

The emulator is the instrument of every throughput benchmark: if checking a bulk body costs more CPU than the
integration spends producing it, the benchmarks measure the sandbox. Figures are CPU seconds of this thread
(``time.thread_time``), so other load on the machine inflates them less than wall time would; the load average
is printed with them. Run directly for the side-by-side table: ``python -m klaviyo_segment.bench.validation``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from klaviyo_segment.bench.runner import EVENTS_PER_JOB, BenchResult, Options, track_messages

#: The emulator must check at least this many events per CPU second (issue 15: faster than the service).
TARGET_EVENTS_PER_S = 20_000.0
MIN_CPU_S = 1.0
QUICK_CPU_S = 0.1


def bulk_events_body(count: int = EVENTS_PER_JOB, seed: int = 0) -> dict[str, Any]:
    """What the forward-track flow sends: track calls through the default template, grouped per profile."""
    from klaviyo_segment.builders.bulk_events import bulk_create_events_body
    from klaviyo_segment.mapping import compile_template

    template = compile_template("track-default")
    events = []
    for message in track_messages(count, seed, users=max(1, count // 4)):
        for mapped in template.apply(message):
            events.append(
                {
                    k: getattr(mapped, k)
                    for k in ("metric", "properties", "time", "value", "value_currency", "unique_id", "profile")
                    if getattr(mapped, k) is not None
                }
            )
    return json.loads(json.dumps(bulk_create_events_body(events[:count]).body))


def bulk_profiles_body(count: int = EVENTS_PER_JOB, seed: int = 0) -> dict[str, Any]:
    """A profile-bulk-import-jobs body of ``count`` profiles with location and custom properties."""
    from klaviyo_segment.builders.klaviyo import bulk_profile_import_body

    profiles = [
        {
            "email": f"bench{seed}.{i}@example.com",
            "external_id": f"user-{i}",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone_number": "+14155552671",
            "location": {"city": "Boston", "country": "USA", "zip": "02110"},
            "properties": {"plan": "pro", "seats": i % 50},
        }
        for i in range(count)
    ]
    return json.loads(json.dumps(bulk_profile_import_body(profiles)))


def cpu_per_call(fn: Callable[[], Any], min_cpu_s: float) -> float:
    """CPU seconds of one call, averaged over as many calls as fill ``min_cpu_s`` (after one warm-up call)."""
    fn()
    calls, started = 0, time.thread_time()
    while True:
        fn()
        calls += 1
        spent = time.thread_time() - started
        if spent >= min_cpu_s:
            return spent / calls


def measure(count: int, min_cpu_s: float, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (body, path): items/s and CPU seconds per 1,000 items."""
    from klaviyo_segment.devkit.sandbox import strictjson
    from klaviyo_segment.devkit.sandbox.klaviyo import fastcheck, operations
    from klaviyo_segment.devkit.sandbox.klaviyo.validation import validate_body, validate_body_reference

    ops = operations.load_operations()
    rows: list[dict[str, Any]] = []
    bodies = {
        "bulk_create_events": ("events", bulk_events_body(count, seed)),
        "bulk_import_profiles": ("profiles", bulk_profiles_body(count, seed)),
    }
    for op_id, (unit, body) in bodies.items():
        schema = ops[op_id].request_schema
        if schema is None or validate_body_reference(body, schema):
            raise RuntimeError(f"{op_id}: the benchmark body is not valid for the schema")
        fastcheck.check_for(schema)  # compiled once per schema, outside the clock (as in a running sandbox)
        raw = json.dumps(body).encode()
        paths: dict[str, Callable[[], Any]] = {
            "jsonschema (old)": lambda b=body, s=schema: validate_body_reference(b, s),
            "compiled (new)": lambda b=body, s=schema: validate_body(b, s),
            "parse + compiled": lambda r=raw, s=schema: validate_body(strictjson.loads(r), s),
        }
        for path, fn in paths.items():
            per_body = cpu_per_call(fn, min_cpu_s)
            rows.append(
                {
                    "body": op_id,
                    "path": path,
                    "unit": unit,
                    "items": count,
                    "items_per_s": count / per_body,
                    "cpu_s_per_1000": per_body * 1000 / count,
                }
            )
    return rows


def run(options: Options) -> BenchResult:
    count = options.messages or EVENTS_PER_JOB
    result = BenchResult(bench="validation")
    for row in measure(count, QUICK_CPU_S if options.quick else MIN_CPU_S, options.seed):
        target = TARGET_EVENTS_PER_S if row["path"] == "compiled (new)" else None
        result.add(
            f"{row['body']} {row['path']}",
            row["items_per_s"],
            f"{row['unit']}/s",
            target,
            note=f"{row['cpu_s_per_1000']:.4f} CPU s / 1,000",
        )
    result.notes.append(
        f"one {count:,}-item body, CPU time of one thread; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )
    return result


def main() -> None:
    """The side-by-side table (no sandbox, no Prefect)."""
    load = os.getloadavg()
    rows = measure(EVENTS_PER_JOB, MIN_CPU_S)
    print(f"{'body':<22} {'path':<18} {'items/s':>12} {'CPU s / 1,000':>14}")
    for row in rows:
        print(f"{row['body']:<22} {row['path']:<18} {row['items_per_s']:>12,.0f} {row['cpu_s_per_1000']:>14.4f}")
    for body in ("bulk_create_events", "bulk_import_profiles"):
        old, new = (
            next(r for r in rows if r["body"] == body and r["path"] == p)
            for p in ("jsonschema (old)", "compiled (new)")
        )
        print(f"{body}: compiled is {old['cpu_s_per_1000'] / new['cpu_s_per_1000']:.1f}x faster")
    print(
        f"load average before/after: {' '.join(f'{x:.2f}' for x in load)} / "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
