"""Counters the inspection API exposes, so tests and benchmarks can assert what the sandbox saw.

Thread-safe because the CLI serves the emulator from a background thread while tests read the counters from
another one.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any


class SandboxStats:
    """Requests, status codes, real throttling, injected faults and validation failures per operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests: Counter[str] = Counter()
            self._status: Counter[str] = Counter()
            self._status_by_op: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self._throttled: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._faults_by_op: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self._validation: Counter[str] = Counter()

    def record_request(self, op_id: str) -> None:
        with self._lock:
            self._requests[op_id] += 1

    def record_status(self, op_id: str, status: int) -> None:
        with self._lock:
            self._status[str(status)] += 1
            self._status_by_op[op_id][str(status)] += 1

    def record_throttled(self, op_id: str) -> None:
        """A 429 from the real limiter; injected 429s go to :meth:`record_fault` so the two never mix."""
        with self._lock:
            self._throttled[op_id] += 1

    def record_fault(self, op_id: str, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1
            self._faults_by_op[op_id][kind] += 1

    def validation_failed(self, op_id: str) -> None:
        """Called by the emulator core for each request it rejects as invalid against the schema."""
        with self._lock:
            self._validation[op_id] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy; totals are included so callers need not sum nested maps."""
        with self._lock:
            return {
                "requests": dict(self._requests),
                "requests_total": sum(self._requests.values()),
                "status_codes": dict(self._status),
                "status_codes_by_operation": {k: dict(v) for k, v in self._status_by_op.items()},
                "throttled": dict(self._throttled),
                "throttled_total": sum(self._throttled.values()),
                "faults": dict(self._faults),
                "faults_by_operation": {k: dict(v) for k, v in self._faults_by_op.items()},
                "faults_total": sum(self._faults.values()),
                "validation_failures": dict(self._validation),
                "validation_failures_total": sum(self._validation.values()),
            }
