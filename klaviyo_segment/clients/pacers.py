"""Which pacer a client gets by default: one per account for the whole process.

Kept apart from ``pacing`` (the in-process limiter) and ``global_limits`` (the cross-worker one, which wraps
the in-process limiter) so the choice between them can import both without either importing the other.
"""

from __future__ import annotations

import threading

from klaviyo_segment.clients.global_limits import global_pacer_from_env, rate_scale
from klaviyo_segment.clients.pacing import InProcessPacer, Pacer

_shared: dict[str, Pacer] = {}
_shared_lock = threading.Lock()


def shared_pacer(account_key: str) -> Pacer:
    """The process-wide pacer of one account, so separate task runs share one view of the quota.

    With ``KLAVIYO_SEGMENT_GLOBAL_LIMITS=prefect`` (and a Prefect API) it is the cross-worker
    :class:`~klaviyo_segment.clients.global_limits.PrefectGlobalPacer`; otherwise the in-process one, scaled
    by ``KLAVIYO_SEGMENT_RATE_SCALE`` (for sandboxes run with scaled limits).
    """
    with _shared_lock:
        if account_key not in _shared:
            pacer: Pacer | None = global_pacer_from_env(account_key)
            _shared[account_key] = pacer if pacer is not None else InProcessPacer(scale=rate_scale())
        return _shared[account_key]
