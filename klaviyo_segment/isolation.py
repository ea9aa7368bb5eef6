"""Per-message isolation (issue 17): one message that makes a flow's steps raise is failed on its own (and
dead-lettered by ``runtime.finish``); it never takes the valid messages of its run, or its batches, down with it.
Used by ``runtime.process_inputs``; the attempt cap for failures no message explains lives in store/inbox.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from klaviyo_segment import redact
from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.runtime import FlowEnv, Item, Processor, outcome

logger = logging.getLogger("klaviyo_segment.runtime")


def failure_text(exc: BaseException) -> str:
    """A failure as stored and shown: type and redacted message, bounded (dead letters, batch errors)."""
    return redact.redact(f"{type(exc).__name__}: {exc}")[:500]


#: Most template runs one isolation may cost (each poison message costs ~2*log2(n)); beyond it the failure is
#: treated as systemic: raised, retried after the lease, capped by the store.
ISOLATION_BUDGET = 128


async def process_isolated(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome], process: Processor) -> None:
    """Run ``process`` over all items; when it raises, bisect to find the messages that make it raise and fail
    only those (reason: the exception), delivering the rest. Re-running a half is safe: every send is
    idempotent (unique ids, upserts), and delivered marks are only written by ``finish``.

    When every message fails on its own with an error that is not about a message's content (store or API down,
    a bug), or the bisection exceeds :data:`ISOLATION_BUDGET`, the first error is raised: the batch is retried
    after its lease instead of a whole stream being dead-lettered during an outage."""
    base = dict(outcomes)
    poisoned: dict[str, BaseException] = {}
    errors: list[BaseException] = []

    async def attempt(part: list[Item]) -> None:
        if len(errors) > ISOLATION_BUDGET:
            raise errors[0]
        trial = dict(base)
        try:
            await process(env, part, trial)
        except Exception as exc:  # isolated below; systemic failures are re-raised
            errors.append(exc)
            if len(part) <= 1:
                if part:
                    poisoned[part[0].key] = exc
                    return
                raise
            middle = len(part) // 2
            await attempt(part[:middle])
            await attempt(part[middle:])
            return
        for item in part:
            if item.key in trial:
                outcomes[item.key] = trial[item.key]

    await attempt(list(items))
    if not poisoned:
        return
    if {item.key for item in items} <= set(poisoned) and not all(map(_is_message_error, poisoned.values())):
        raise errors[0]
    for item in items:
        exc = poisoned.get(item.key)
        if exc is not None:
            logger.warning(
                "%s: message %s failed on its own and is dead-lettered: %s", env.flow, item.key, failure_text(exc)
            )
            outcomes[item.key] = outcome(item, Status.FAILED, f"processing error: {failure_text(exc)}")


def refuse_unstorable_keys(items: Sequence[Item], outcomes: dict[str, Outcome]) -> None:
    """A message whose key holds a NUL or a lone surrogate (inputs that bypassed the door) could be neither
    marked delivered nor matched later: it fails up front, before anything is sent for it."""
    for item in items:
        if item.key not in outcomes and ("\x00" in item.key or _has_surrogate(item.key)):
            outcomes[item.key] = outcome(
                item,
                Status.FAILED,
                "messageId contains a NUL character or a lone UTF-16 surrogate, which the store cannot hold",
            )


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _is_message_error(exc: BaseException) -> bool:
    """Errors only a message's content can cause (text a codec or PostgreSQL refuses, absurd nesting): a message
    failing with one is poison even when it is alone in its run."""
    text = str(exc)
    return (
        isinstance(exc, (UnicodeError, RecursionError))
        or "invalid byte sequence" in text
        or "unsupported Unicode escape sequence" in text
    )
