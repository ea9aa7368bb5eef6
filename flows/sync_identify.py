"""Flow ``sync-identify``: Segment identify -> Klaviyo profile upsert; alias and delete keep identities right.

Steps: common rules -> alias/group bookkeeping -> map identifies (remembered anonymous traits merged in) ->
collapse several identifies of one person into one request (timestamp order, later wins) -> upsert (bulk job for
large batches) -> add to the list an identify names (``integrations.Klaviyo.listId`` / ``list_id``) -> deletes (lookup, deletion job per profile, purge of local traces).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow

from klaviyo_segment import flowkit
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.run_report import flow_run_name
from klaviyo_segment.identify_lists import add_to_lists, list_id_of
from klaviyo_segment.mapping import ProfileMapping
from klaviyo_segment.outcomes import Outcome, Status
from klaviyo_segment.runtime import FlowEnv, Item, common_rules, outcome, run_flow

NAME = "sync-identify"
_TYPES = ("identify", "alias", "delete", "group")
_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def accepts(item: Item) -> str | None:
    return None if item.msg is not None and item.msg.type in _TYPES else "not for this flow"


def routes(msg: dict[str, Any], config: Any) -> bool:
    """Every identity call: identify, alias, delete and group (group is only acknowledged)."""
    return msg.get("type") in _TYPES


def _when(item: Item) -> tuple[datetime, int]:
    assert item.msg is not None
    return item.msg.timestamp or _EPOCH, item.index


def _deep_merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Later identify wins per field; nested objects (location, properties) merge field by field."""
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _People:
    """Union of identifies sharing any identifier, so 'email only' and 'userId + email' become one request."""

    def __init__(self) -> None:
        self.owner: dict[str, int] = {}
        self.groups: list[list[tuple[Item, ProfileMapping]]] = []

    def add(self, item: Item, mapped: ProfileMapping) -> None:
        keys = flowkit.identity_cache_keys(mapped.attributes)
        hits = sorted({self.owner[k] for k in keys if k in self.owner})
        if not hits:
            self.groups.append([])
            target = len(self.groups) - 1
        else:
            target = hits[0]
            for other in hits[1:]:
                self.groups[target] += self.groups[other]
                self.groups[other] = []
                self.owner.update({k: target for k, g in self.owner.items() if g == other})
        self.groups[target].append((item, mapped))
        self.owner.update({k: target for k in keys})

    def requests(self) -> list[tuple[list[tuple[Item, ProfileMapping]], dict[str, Any]]]:
        """(contributing messages with their mappings, merged attributes) per person, merged in timestamp
        order; people come in first-seen order so previews list requests stably."""
        out = []
        for group in self.groups:
            if not group:
                continue
            group.sort(key=lambda pair: _when(pair[0]))
            attributes: dict[str, Any] = {}
            for _, mapped in group:
                attributes = _deep_merge(attributes, mapped.attributes)
            out.append((group, attributes))
        return out


async def process(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    """The template's steps; every message gets exactly one outcome."""
    todo = await common_rules(env, items, outcomes, accepts)
    by_type: dict[str, list[Item]] = {t: [] for t in _TYPES}
    for item in todo:
        assert item.msg is not None
        by_type[item.msg.type].append(item)
    for item in by_type["group"]:
        outcomes[item.key] = outcome(item, Status.SKIPPED, "group calls are not synced")
    await _aliases(env, by_type["alias"], outcomes)
    await _identifies(env, sorted(by_type["identify"], key=_when), outcomes)
    await _deletes(env, by_type["delete"], outcomes)


async def _aliases(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    """``alias``: previousId (an anonymous id, usually) is the same person as userId from now on."""
    learnt: dict[str, dict[str, Any]] = {}
    for item in items:
        assert item.msg is not None and item.msg.previous_id
        target = item.msg.user_id or item.msg.anonymous_id
        if target and target != item.msg.previous_id:
            learnt.setdefault(item.msg.previous_id, {}).update({"user_id": target})
        outcomes[item.key] = outcome(item, Status.SKIPPED, "alias recorded")
    if learnt:
        await env.store.put_aliases(learnt)


def _map(env: FlowEnv, message: dict[str, Any]) -> ProfileMapping | str | None:
    """The profile mapping, None when no template handles the message, or the reason it is unusable."""
    mapped = flowkit.map_message(env.config.compiled().identify, message, ProfileMapping)
    if isinstance(mapped, list):
        return mapped[0] if mapped else None
    return mapped


async def _identifies(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    aliases = await flowkit.resolve_aliases(env, [i.msg.anonymous_id for i in items if i.msg and i.msg.anonymous_id])
    remembered: dict[str, dict[str, Any]] = {}  # anonymous traits to store (no identifier yet)
    learnt: dict[str, dict[str, Any]] = {}  # anonymousId -> identifiers seen together with it
    people = _People()
    for item in items:  # timestamp order
        assert item.msg is not None and isinstance(item.raw, dict)
        anon = item.msg.anonymous_id
        known = aliases.get(anon or "", {})
        message = dict(item.raw)
        old_traits = {**(known.get("traits") or {}), **(remembered.get(anon or "", {}))}
        if old_traits:  # older anonymous traits under this identify's traits
            message["traits"] = {**old_traits, **(item.msg.traits or {})}
        mapped = _map(env, message)
        if isinstance(mapped, ProfileMapping) and not mapped.has_identifier and flowkit.alias_identity(known):
            mapped = _map(env, flowkit.with_alias_identity(message, known))
        if mapped is None:
            outcomes[item.key] = outcome(item, Status.SKIPPED, "no template matched")
            continue
        if isinstance(mapped, str):
            outcomes[item.key] = outcome(item, Status.FAILED, mapped)
            continue
        if not mapped.has_identifier:
            if anon:
                remembered[anon] = {**remembered.get(anon, {}), **(item.msg.traits or {})}
            outcomes[item.key] = outcome(item, Status.SKIPPED, "no Klaviyo identifier", warnings=mapped.warnings)
            continue
        if anon:
            attrs = mapped.attributes
            ids = {"user_id": attrs.get("external_id"), "email": attrs.get("email"),
                   "phone": attrs.get("phone_number")}
            learnt[anon] = {**learnt.get(anon, {}), **{k: v for k, v in ids.items() if v}}
        people.add(item, mapped)
    if remembered or learnt:
        await env.store.put_aliases({a: {**({"traits": remembered[a]} if a in remembered else {}),
                                         **learnt.get(a, {})} for a in {*remembered, *learnt}})
    requests = people.requests()
    results = await flowkit.upsert_profiles(env, [attrs for _, attrs in requests])
    list_failures = await _list_adds(env, requests, results)
    for pos, ((contributors, _), result) in enumerate(zip(requests, results, strict=True)):
        for item, mapping in contributors:  # each message keeps its own mapping warnings
            warnings = mapping.warnings
            if result.ok and pos in list_failures:
                outcomes[item.key] = outcome(item, Status.FAILED, list_failures[pos], warnings=warnings)
            elif result.ok:
                outcomes[item.key] = outcome(item, Status.SENT, warnings=warnings)
            elif flowkit.is_conflict(result.error):
                outcomes[item.key] = flowkit.conflict_failure(item, result.error, warnings)
            else:
                outcomes[item.key] = flowkit.api_failure(item, result.error, "profile upsert", warnings)


async def _list_adds(env: FlowEnv, requests: list[tuple[list[tuple[Item, ProfileMapping]], dict[str, Any]]],
                     results: list[Any]) -> dict[int, str]:
    """Add upserted profiles to the list their identify names (latest message of the person wins)."""
    wanted, positions = [], []
    for pos, ((contributors, attrs), result) in enumerate(zip(requests, results, strict=True)):
        named = [list_id_of(item.raw) for item, _ in contributors if isinstance(item.raw, dict)]
        list_id = next((x for x in reversed(named) if x), None)
        if result.ok and list_id:
            wanted.append((list_id, attrs, result))
            positions.append(pos)
    failures = await add_to_lists(env, wanted) if wanted else {}
    return {positions[p]: reason for p, reason in failures.items()}


async def _deletes(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    """Segment ``delete``: erase the Klaviyo profile(s) of the person and every local trace of them."""
    from klaviyo_segment.tasks import identity as ti
    from klaviyo_segment.tasks import klaviyo_privacy as tv

    if not items:
        return
    aliases = await flowkit.resolve_aliases(env, [i.msg.anonymous_id for i in items if i.msg and i.msg.anonymous_id])
    people: list[dict[str, str]] = []
    for item in items:
        assert item.msg is not None
        known = flowkit.alias_identity(aliases.get(item.msg.anonymous_id or ""))
        user_id = item.msg.user_id or known.get("user_id")
        people.append({k: v for k, v in {"external_id": user_id, "email": known.get("email"),
                                         "phone": known.get("phone")}.items() if v})
    resolved = await env.call(ti.resolve_identities, people, env.klaviyo,
                              default_region=env.config.phone_default_country,
                              cache=flowkit.StoreIdentityCache(env.store))
    jobs: list[tuple[int, str]] = []  # (item position, profile id)
    for pos, result in enumerate(resolved):
        if result.ok:
            pid = (result.value or {}).get("profile_id")
            jobs += [(pos, pid)] if pid else []
        elif result.error is not None and result.error.code == "identity_conflict":
            # Both profiles hold this person's identifiers: a privacy request covers them all.
            jobs += [(pos, p) for p in dict.fromkeys(result.error.meta.get("profile_ids", {}).values())]
        else:
            outcomes[items[pos].key] = flowkit.api_failure(items[pos], result.error, "profile lookup")
    deleted = await env.call(tv.request_profile_deletions, [{"id": pid} for _, pid in jobs], env.klaviyo) \
        if jobs else []
    errors = {pos: r.error for (pos, _), r in zip(jobs, deleted, strict=True) if not r.ok}
    for pos, item in enumerate(items):
        if item.key in outcomes:
            continue
        if pos in errors:  # keep local traces: a replay needs them to find the profile again
            outcomes[item.key] = flowkit.api_failure(item, errors[pos], "deletion request")
            continue
        assert item.msg is not None
        from klaviyo_segment.backfill import purge_rejects

        person = {"user_id": item.msg.user_id, "anonymous_id": item.msg.anonymous_id,
                  "email": people[pos].get("email"), "phone": people[pos].get("phone")}
        await env.store.purge_person(person)
        await purge_rejects(env.store, person)  # backfill rejects files hold rows about this person too
        if any(p == pos for p, _ in jobs):
            outcomes[item.key] = outcome(item, Status.SENT, "deletion requested")
        else:
            outcomes[item.key] = outcome(item, Status.SKIPPED, "no Klaviyo profile found; local traces purged")


@flow(name=NAME, flow_run_name=flow_run_name, description="Segment identify/alias/delete -> Klaviyo profiles (upsert, identity, deletion).",
      log_prints=False)
async def sync_identify(messages: list[dict[str, Any]] | None = None, batch_ids: list[str] | None = None,
                        config: dict[str, Any] | None = None, config_block: str | None = None) -> dict[str, Any]:
    """Keep Klaviyo profiles in step with Segment identities: one request per person per batch, identity
    conflicts reported instead of duplicated, and deletions honoured in Klaviyo and in our own store."""
    return await run_flow(NAME, messages, batch_ids, config, config_block, process)


SPEC = FlowSpec(name=NAME, flow=sync_identify, process=process, accepts=accepts, routes=routes)
