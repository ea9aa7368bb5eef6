"""replay-dead-letters: run failed messages through their flow again, and clear the ones that now succeed.

Why through each flow's own ``process``: a replay must apply exactly the rules and batching of a normal run
(including "already delivered" checks, so replaying twice sends nothing new). Copies are marked as replays
(``context.replay = true``, see :func:`mark_replay`) so flows can tell a late delivery from live traffic;
forward-track sends them with ``backfill: true``. A dead letter whose replay is sent or deliberately skipped is
resolved; one that fails again stays (``runtime.finish`` re-records it, so its ``attempts`` grows), and the run
ends Failed (PartlyFailed when some were sent), like every flow (``klaviyo_segment.run_state``): an automation on
failed runs must hear that a replay did not fix everything. Callers use ``run_state.call_flow``.

"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from typing import Any

from prefect import flow

from klaviyo_segment import runtime
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.outcomes import Status
from klaviyo_segment.run_state import final_state

NAME = "replay-dead-letters"

logger = logging.getLogger("klaviyo_segment.flows.replay")


def mark_replay(message: dict[str, Any], message_id: str | None) -> dict[str, Any]:
    """A copy flagged ``context.replay = true``. A message that had no messageId gets the key it failed under,
    because the content-hash key would change with the flag and the dead letter could no longer be matched."""
    out = copy.deepcopy(message)
    context = out.get("context")
    out["context"] = {**(context if isinstance(context, dict) else {}), "replay": True}
    if message_id and not out.get("messageId"):
        out["messageId"] = message_id
    return out


async def _load(config: dict[str, Any] | None, flow_name: str | None, ids: list[str] | None) -> list[Any]:
    from klaviyo_segment.settings import credentials_document, resolve_store_url
    from klaviyo_segment.store import Store

    store = await Store.open(resolve_store_url(config=credentials_document(config)))
    try:
        letters = await store.list_dead_letters(flow=flow_name)
    finally:
        await store.close()
    if ids:
        wanted = set(ids)
        letters = [d for d in letters if d.id in wanted]
    return letters


async def replay_group(
    name: str, letters: list[Any], config: dict[str, Any] | None, config_block: str | None
) -> tuple[dict[str, Any], list[str]]:
    """Replay one flow's dead letters; returns (that flow's summary, ids of the dead letters to resolve)."""
    from klaviyo_segment.flows import get_spec

    spec = get_spec(name)
    messages = [mark_replay(d.message, d.message_id) for d in letters]
    async with runtime.open_env(name, config, config_block=config_block, segment=spec.sends_to_segment) as env:
        summary = await runtime.process_spec(env, spec, messages)
        resolved = [
            d.id
            for d, o in zip(letters, summary["outcomes"], strict=False)
            if o["status"] in (Status.SENT.value, Status.SKIPPED.value)
        ]
        if resolved:
            await env.store.resolve_dead_letters(resolved)
    return summary, resolved


@flow(
    name=NAME,
    description="Replay dead letters through their flows; resolve the ones that now succeed.",
    log_prints=False,
)
async def replay_dead_letters(
    flow: str | None = None, ids: list[str] | None = None, config: dict | None = None, config_block: str | None = None
) -> Any:
    """Retry what failed (after an outage, a fixed mapping or a granted scope) without re-sending what
    succeeded. ``flow`` and ``ids`` narrow the selection; both empty = every dead letter. Dead letters of a flow
    that cannot be replayed here (e.g. ``backfill-profiles`` rows) stay and are reported as failed."""
    letters = await _load(config, flow, ids)
    groups: dict[str, list[Any]] = {}
    for letter in letters:
        groups.setdefault(letter.flow, []).append(letter)
    totals: Counter[str] = Counter()
    per_flow: dict[str, Any] = {}
    outcomes: list[dict[str, Any]] = []
    resolved_ids: list[str] = []
    for name, group in groups.items():
        try:
            summary, resolved = await replay_group(name, group, config, config_block)
        except ConfigError as exc:  # e.g. a flow whose required config key is now missing: keep its letters
            per_flow[name] = {
                "flow": name,
                "received": len(group),
                "sent": 0,
                "skipped": 0,
                "failed": len(group),
                "error": str(exc),
            }
            totals.update(received=len(group), failed=len(group))
            continue
        outcomes.extend(summary.pop("outcomes"))
        per_flow[name] = summary
        resolved_ids.extend(resolved)
        totals.update({k: summary[k] for k in ("received", "sent", "skipped", "failed")})
    return final_state(  # Failed/PartlyFailed when letters failed again: the rule of every flow (run_state)
        {
            "flow": NAME,
            "received": totals["received"],
            "sent": totals["sent"],
            "skipped": totals["skipped"],
            "failed": totals["failed"],
            "resolved": len(resolved_ids),
            "remaining": len(letters) - len(resolved_ids),
            "resolved_ids": resolved_ids,
            "flows": per_flow,
            "outcomes": outcomes,
        }
    )


SPEC = FlowSpec(name=NAME, flow=replay_dead_letters)
