"""``latency``: audience enter -> Klaviyo list membership with ``serve`` on the embedded default.

Not measured yet: it needs ``serve`` (inline dispatch of sync-audiences) finished by the ingress work. The
benchmark reports that as an error row (exit 1) rather than a made-up figure.
"""

from __future__ import annotations

from klaviyo_segment.bench.runner import BenchResult, Options

TARGET_P95_S = 5.0


def run(options: Options) -> BenchResult:
    result = BenchResult(bench="latency")
    result.add("audience enter -> list member p95 (>= 200 changes)", None, "s", TARGET_P95_S, lower_is_better=True)
    result.error = "not implemented yet: waits for `serve` with inline sync-audiences dispatch"
    return result
