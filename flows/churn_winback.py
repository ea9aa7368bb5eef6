"""churn-winback: people entering the churn cohort get ``churn_risk`` properties and join the win-back list;
people leaving it are flagged back and removed.

Entry comes from the Engage audience (either form) or from a score trait crossing the threshold; the previous
score lives in the state store because Segment only sends the current value. Changes are ordered per person
like sync-audiences, so a late, older message never flips the cohort back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow

from klaviyo_segment import flowkit
from klaviyo_segment.builders.klaviyo import format_datetime
from klaviyo_segment.config import AppConfig, ChurnConfig
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.jsondict import obj
from klaviyo_segment.membership import (
    SUPERSEDED,
    Change,
    apply_membership,
    identity_of,
    order_changes,
    person_of,
    record_versions,
    resolve_profiles,
    settle,
    with_aliases,
)
from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.routing import AUDIENCE_EVENTS, audience_key, is_audience_identify
from klaviyo_segment.run_report import flow_run_name
from klaviyo_segment.runtime import FlowEnv, Item, common_rules, outcome, run_flow
from klaviyo_segment.tasks.klaviyo_profiles import upsert_profiles

NAME = "churn-winback"
NO_TRANSITION = "no churn transition"


def accepts(item: Item, config: AppConfig | None = None) -> str | None:
    """The churn audience (either form), or an identify carrying the churn score trait."""
    churn = config.churn if config else ChurnConfig()
    msg = item.msg
    assert msg is not None
    if audience_key(item.raw) == churn.audience_key:
        return None
    if msg.type == "identify" and churn.trait in msg.traits:
        return None
    return "not for this flow"


def routes(msg: dict[str, Any], config: AppConfig) -> bool:
    """The churn audience (track or identify form), or an identify carrying the churn score trait."""
    churn = config.churn
    if churn is None:
        return False
    key = audience_key(msg)
    traits = obj(msg, "traits")
    return bool(key and key == churn.audience_key) or (msg.get("type") == "identify" and churn.trait in traits)


def score_of(item: Item, churn: ChurnConfig) -> float | None:
    """The churn score the message carries; ValueError when present but not a number (invalid data)."""
    assert item.msg is not None
    value = item.msg.traits.get(churn.trait, item.msg.properties.get(churn.trait))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"invalid message: trait {churn.trait!r} must be a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"invalid message: trait {churn.trait!r} must be a number") from None


def audience_state(item: Item, churn: ChurnConfig) -> bool | None:
    """Entered/exited the churn audience, or None when the message is not an audience message for it."""
    msg = item.msg
    assert msg is not None
    if audience_key(item.raw) != churn.audience_key:
        return None
    if msg.type == "track" and msg.event in AUDIENCE_EVENTS:
        return msg.event == AUDIENCE_EVENTS[0]
    if is_audience_identify(item.raw) and isinstance(msg.traits.get(churn.audience_key), bool):
        return bool(msg.traits[churn.audience_key])
    return None


async def decide(env: FlowEnv, changes: Sequence[Change]) -> None:
    """Score changes become enter/exit by comparing with the stored previous score; others are no transition."""
    churn = env.config.churn
    scored = [c for c in changes if c.open and "audience" not in c.data]
    previous = await env.store.get_values([c.data["value_key"] for c in scored]) if scored else {}
    for change in scored:
        before, now = previous.get(change.data["value_key"]), change.data["score"]
        was_in = before is not None and before >= churn.threshold
        if now >= churn.threshold and not was_in:
            change.enter = True
        elif now < churn.threshold and was_in:
            change.enter = False
        else:
            change.skip, change.holds = NO_TRANSITION, True


async def flag_profiles(env: FlowEnv, changes: Sequence[Change]) -> None:
    """Set churn_risk properties with profile-import by id (identifiers cannot conflict; a bulk job has no ids)."""
    todo = [c for c in changes if c.open and c.profile_id]
    profiles: list[dict[str, Any]] = []
    for change in todo:
        props: dict[str, Any] = {"churn_risk": change.enter}
        if change.data.get("score") is not None:
            props["churn_risk_score"] = change.data["score"]
        if change.enter:
            props["churn_risk_entered_at"] = format_datetime(change.at)
        profiles.append({"id": change.profile_id, "properties": props})
    results = await env.call(upsert_profiles, profiles, env.klaviyo) if profiles else []
    for change, result in zip(todo, results, strict=False):
        if not result.ok:
            change.failed(f"profile update failed: {flowkit.describe(result.error)}", result.error)


def latest_scores(changes: Sequence[Change]) -> dict[str, Any]:
    """The newest score per person to remember as "previous": from changes applied, already holding, or superseded
    by a newer change in this batch (the score was still the person's latest report) — never from a failed one,
    so a redelivery compares against the value before the failure."""
    failed = {c.data["value_key"] for c in changes if c.fail}
    newest: dict[str, Change] = {}
    for change in changes:
        key = change.data["value_key"]
        if change.data["score"] is None or key in failed:
            continue
        if not (change.done or change.holds or change.skip == SUPERSEDED):
            continue
        if key not in newest or change.at >= newest[key].at:
            newest[key] = change
    return {key: change.data["score"] for key, change in newest.items()}


async def process(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    churn = env.config.churn
    todo = await common_rules(env, items, outcomes, lambda i: accepts(i, env.config))
    changes: list[Change] = []
    for item in todo:
        assert item.msg is not None
        try:
            score = score_of(item, churn)
        except ValueError as exc:
            outcomes[item.key] = outcome(item, Status.FAILED, str(exc))
            continue
        state = audience_state(item, churn)
        if state is None and score is None:
            outcomes[item.key] = outcome(item, Status.SKIPPED, NO_TRANSITION)
            continue
        identity = identity_of(item.msg)
        person = person_of(item.msg, identity)
        data: dict[str, Any] = {"score": score, "value_key": f"churn:{person}"}
        if state is not None:
            data["audience"] = True
        changes.append(
            Change(
                item=item,
                version_key=f"churn:{person}",
                at=item.msg.timestamp or env.now,
                identity=identity,
                enter=bool(state),
                audience=churn.audience_key,
                list_id=churn.list_id,
                data=data,
            )
        )
    await order_changes(env, changes)
    await decide(env, changes)
    await with_aliases(env, changes)
    await resolve_profiles(env, changes)
    await flag_profiles(env, changes)
    await apply_membership(env, changes)
    scores = latest_scores(changes)
    if scores:
        await env.store.put_values(scores)
    await record_versions(env, changes)
    settle(todo, changes, outcomes)


@flow(
    name=NAME,
    flow_run_name=flow_run_name,
    description="Churn cohort entry/exit -> churn_risk profile properties and the win-back list.",
    log_prints=False,
)
async def churn_winback(
    messages: list[dict[str, Any]] | None = None,
    batch_ids: list[str] | None = None,
    config: dict[str, Any] | None = None,
    config_block: str | None = None,
) -> dict[str, Any]:
    """Flag people at churn risk in Klaviyo and keep the win-back list in step with the cohort."""
    return await run_flow(NAME, messages, batch_ids, config, config_block, process)


SPEC = FlowSpec(
    name=NAME,
    flow=churn_winback,
    process=process,
    accepts=accepts,
    routes=routes,
    required_config_keys=("churn.list_id",),
)
