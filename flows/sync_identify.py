"""Flow ``sync-identify``: Segment identify -> Klaviyo profile upsert; alias and delete keep identities right.

Steps: common rules -> alias/group bookkeeping -> map identifies (remembered anonymous traits merged in) ->
collapse several identifies of one person into one request (timestamp order, later wins) -> upsert (bulk job for
large batches) -> add to the list an identify names (``integrations.Klaviyo.listId`` / ``list_id``) -> deletes
(lookup, deletion job per profile, purge of local traces).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from klaviyo_segment import flowkit
from klaviyo_segment.errors import ApiError
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.identify_lists import add_to_lists, list_id_of
from klaviyo_segment.mapping import ProfileMapping
from klaviyo_segment.outcomes import ItemResult, Outcome, Status
from klaviyo_segment.run_report import flow_run_name
from klaviyo_segment.runtime import FlowEnv, Item, common_rules, outcome, run_flow

NAME = "sync-identify"
_TYPES = ("identify", "alias", "delete", "group")


def accepts(item: Item) -> str | None:
    return None if item.msg is not None and item.msg.type in _TYPES else "not for this flow"


def routes(msg: dict[str, Any], config: Any) -> bool:
    """Every identity call: identify, alias, delete and group (group is only acknowledged)."""
    return msg.get("type") in _TYPES


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
    # Deletes first: their tombstones then skip this batch's older identifies, and a newer identify (a person
    # coming back) is applied after the delete instead of being erased by it.
    await _deletes(env, by_type["delete"], outcomes)
    await _identifies(env, sorted(by_type["identify"], key=flowkit.when), outcomes)


async def _aliases(env: FlowEnv, items: list[Item], outcomes: dict[str, Outcome]) -> None:
    """``alias``: previousId (an anonymous id, usually) is the same person as userId from now on. With
    ``identity.merge_anonymous``, the Klaviyo profile the anonymous id's email/phone reached is merged into the
    userId's profile (reported on the message)."""
    learnt: dict[str, dict[str, Any]] = {}
    merges: list[tuple[Item, dict[str, Any]]] = []
    known = (
        await flowkit.resolve_aliases(env, [i.msg.previous_id for i in items if i.msg and i.msg.previous_id])
        if env.config.identity.merge_anonymous
        else {}
    )
    for item in items:
        assert item.msg is not None and item.msg.previous_id
        target = item.msg.user_id or item.msg.anonymous_id
        if target and target != item.msg.previous_id:
            learnt.setdefault(item.msg.previous_id, {}).update({"user_id": target})
            before = flowkit.alias_identity(known.get(item.msg.previous_id))
            if item.msg.user_id and (before.get("email") or before.get("phone")):
                merges.append(
                    (
                        item,
                        {
                            "external_id": item.msg.user_id,
                            "email": before.get("email"),
                            "phone_number": before.get("phone"),
                        },
                    )
                )
        outcomes[item.key] = outcome(item, Status.SKIPPED, "alias recorded")
    if learnt:
        await env.store.put_aliases(learnt)
    results = await _merge(env, [{k: v for k, v in i.items() if v} for _, i in merges]) if merges else []
    for (item, _), result in zip(merges, results, strict=True):
        note = _merged_note(result.value) if result.ok else None
        if note:
            outcomes[item.key] = outcome(item, Status.SENT, f"alias recorded; {note}")
        elif not result.ok:
            outcomes[item.key] = outcome(
                item, Status.SKIPPED, f"alias recorded; profiles not merged: {flowkit.describe(result.error)}"
            )


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
    candidates: list[tuple[Item, ProfileMapping]] = []
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
            ids = {"user_id": attrs.get("external_id"), "email": attrs.get("email"), "phone": attrs.get("phone_number")}
            learnt[anon] = {**learnt.get(anon, {}), **{k: v for k, v in ids.items() if v}}
        candidates.append((item, mapped))
    if remembered or learnt:
        await env.store.put_aliases(
            {
                a: {**({"traits": remembered[a]} if a in remembered else {}), **learnt.get(a, {})}
                for a in {*remembered, *learnt}
            }
        )
    candidates = await _after_deletes(env, candidates, outcomes)
    people = flowkit.People()
    for item, mapped in candidates:  # timestamp order: the later claimant of an email is the one that fails
        conflict = people.add(item, mapped)
        if conflict is not None:
            error = ApiError(code="identity_conflict", detail=conflict)
            outcomes[item.key] = outcome(item, Status.FAILED, conflict, error, mapped.warnings)
    members = await flowkit.newer_only(env, people.members(), outcomes, people.warnings)
    requests = await _claimed_by_others(
        env, [(group, flowkit.merged_attributes(group)) for group in members], outcomes, people.warnings
    )
    results = await flowkit.upsert_profiles(env, [attrs for _, attrs in requests])
    results = await _without_taken_phones(env, requests, results, people.warnings)
    if env.config.identity.merge_anonymous:
        results = await _merge_anonymous(env, requests, results, people.warnings)
    list_failures = await _list_adds(env, requests, results)
    applied = []
    for pos, ((contributors, _attrs), result) in enumerate(zip(requests, results, strict=True)):
        for item, mapping in contributors:  # each message keeps its own mapping warnings
            warnings = [*mapping.warnings, *people.warnings.get(item.key, [])]
            if result.ok and pos in list_failures:
                outcomes[item.key] = outcome(item, Status.FAILED, list_failures[pos], warnings=warnings)
            elif result.ok:
                outcomes[item.key] = outcome(item, Status.SENT, warnings=warnings)
            elif flowkit.is_conflict(result.error):
                outcomes[item.key] = flowkit.conflict_failure(item, result.error, warnings)
            else:
                outcomes[item.key] = flowkit.api_failure(item, result.error, "profile upsert", warnings)
        if result.ok:
            applied.append(contributors)
    await flowkit.record_versions(env, applied)


Request = tuple[list[tuple[Item, ProfileMapping]], dict[str, Any]]


async def _claimed_by_others(
    env: FlowEnv, requests: list[Request], outcomes: dict[str, Outcome], warnings: dict[str, list[str]]
) -> list[Request]:
    """Never update another person's profile: Klaviyo matches profile-import on any identifier, so a phone or
    email whose profile carries a different userId would move that profile to this person. The phone is left off
    (with a warning); an email taken by another userId fails the person as ``identity_conflict``. Identifiers the
    identity cache already ties to this userId's profile are not looked up again."""
    from klaviyo_segment.tasks import klaviyo_profiles as tp

    fields = (("phone_number", "phone"), ("email", "email"))
    todo: dict[str, list[str]] = {f: [] for f, _ in fields}  # field -> values to look up
    cache = await env.store.get_profile_ids(sorted({k for _, a in requests for k in flowkit.identity_cache_keys(a)}))
    for _, attrs in requests:
        own = cache.get(f"external_id:{attrs.get('external_id')}")
        for field, kind in fields:
            value = attrs.get(field)
            if attrs.get("external_id") and isinstance(value, str) and value:
                key = f"{kind}:{value.strip().lower() if field == 'email' else value}"
                if own is None or cache.get(key) != own:
                    todo[field].append(value)
    owners: dict[str, dict[str, Any]] = {}
    for field, values in todo.items():
        if values:
            found = await env.call(tp.get_profiles_by_identifiers, values, env.klaviyo, field=field)
            owners.update(
                {
                    f"{field}:{v}": (r.value or {}).get("attributes") or {}
                    for v, r in zip(values, found, strict=True)
                    if r.ok and r.value
                }
            )
    out: list[Request] = []
    for members, attrs in requests:
        user = attrs.get("external_id")
        email_owner = (owners.get(f"email:{attrs.get('email')}") or {}).get("external_id")
        if email_owner not in (None, user):
            reason = (
                f"identity_conflict: email already belongs to another person (userId {email_owner!r}); "
                f"userId {user!r} cannot claim it"
            )
            for item, mapped in members:
                outcomes[item.key] = outcome(
                    item, Status.FAILED, reason, ApiError(code="identity_conflict", detail=reason), mapped.warnings
                )
            continue
        if (owners.get(f"phone_number:{attrs.get('phone_number')}") or {}).get("external_id") not in (None, user):
            attrs = {k: v for k, v in attrs.items() if k != "phone_number"}
            for item, _ in members:
                warnings.setdefault(item.key, []).append(flowkit.OTHER_PERSON.format(field="phone_number"))
        out.append((members, attrs))
    return out


def _identity(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: attrs[k] for k in ("external_id", "email", "phone_number") if attrs.get(k)}


async def _merge(env: FlowEnv, identities: list[dict[str, Any]]) -> list[ItemResult]:
    """Merge the profiles these identifiers point at into the userId's profile (``services.identity`` refuses
    when the other profile belongs to another userId)."""
    from klaviyo_segment.tasks import identity as ti

    return await env.call(
        ti.resolve_identities,
        identities,
        env.klaviyo,
        default_region=env.config.phone_default_country,
        cache=flowkit.StoreIdentityCache(env.store),
        merge=True,
    )


def _merged_note(value: dict[str, Any] | None) -> str | None:
    if not value or value.get("status") != "merged":
        return None
    return f"merged Klaviyo profile {', '.join(value.get('merged') or [])} into {value.get('profile_id')}"


async def _merge_anonymous(
    env: FlowEnv, requests: list[Request], results: list[ItemResult], warnings: dict[str, list[str]]
) -> list[ItemResult]:
    """``identity.merge_anonymous``: a 409 because the email/phone sits on a profile without a userId (an
    anonymous visitor or an email-only lead) merges that profile into the person's, then upserts again."""
    todo = [
        i
        for i, ((_, attrs), r) in enumerate(zip(requests, results, strict=True))
        if not r.ok and r.error is not None and r.error.code == "duplicate_profile" and attrs.get("external_id")
    ]
    if not todo:
        return results
    results = list(results)
    merged = await _merge(env, [_identity(requests[i][1]) for i in todo])
    again = [(i, m) for i, m in zip(todo, merged, strict=True) if m.ok and _merged_note(m.value)]
    for i, m in zip(todo, merged, strict=True):
        if not m.ok:
            results[i] = m
    retried = await flowkit.upsert_profiles(env, [requests[i][1] for i, _ in again])
    for (i, m), result in zip(again, retried, strict=True):
        results[i] = result
        for item, _ in requests[i][0]:
            warnings.setdefault(item.key, []).append(_merged_note(m.value) or "")
    return results


async def _after_deletes(
    env: FlowEnv, candidates: list[tuple[Item, ProfileMapping]], outcomes: dict[str, Outcome]
) -> list[tuple[Item, ProfileMapping]]:
    """A delete is final against anything older: an identify from before the person's delete (a re-run batch,
    a retry, a replay) is skipped instead of re-creating the deleted profile."""
    if not candidates:
        return []
    deleted = await env.store.deleted_at([m.attributes for _, m in candidates])
    keep = []
    for (item, mapped), when in zip(candidates, deleted, strict=True):
        assert item.msg is not None
        if when is not None and (item.msg.timestamp is None or item.msg.timestamp <= when):
            outcomes[item.key] = outcome(item, Status.SKIPPED, "older than a delete", warnings=mapped.warnings)
        else:
            keep.append((item, mapped))
    return keep


async def _without_taken_phones(
    env: FlowEnv, requests: list[Request], results: list[ItemResult], warnings: dict[str, list[str]]
) -> list[ItemResult]:
    """Klaviyo answers 409 when an identifier already belongs to another profile (another run's person). A phone
    is a shared identifier (company lines): send the person's update without it, once, with a warning. An email
    or userId conflict stays a failure: never update another person's profile."""
    retry = [
        i
        for i, ((_, attrs), r) in enumerate(zip(requests, results, strict=True))
        if not r.ok and r.error is not None and r.error.code == "duplicate_profile" and attrs.get("phone_number")
    ]
    if not retry:
        return results
    again = await flowkit.upsert_profiles(
        env, [{k: v for k, v in requests[i][1].items() if k != "phone_number"} for i in retry]
    )
    results = list(results)
    for i, result in zip(retry, again, strict=True):
        results[i] = result
        if result.ok:
            for item, _ in requests[i][0]:
                warnings.setdefault(item.key, []).append(flowkit.OTHER_PERSON.format(field="phone_number"))
    return results


async def _list_adds(
    env: FlowEnv, requests: list[tuple[list[tuple[Item, ProfileMapping]], dict[str, Any]]], results: list[Any]
) -> dict[int, str]:
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
    await env.store.purge_tombstones()  # expired ones only; cheap, and deletes are when they accumulate
    aliases = await flowkit.resolve_aliases(env, [i.msg.anonymous_id for i in items if i.msg and i.msg.anonymous_id])
    people: list[dict[str, str]] = []
    for item in items:
        assert item.msg is not None
        known = flowkit.alias_identity(aliases.get(item.msg.anonymous_id or ""))
        user_id = item.msg.user_id or known.get("user_id")
        people.append(
            {
                k: v
                for k, v in {"external_id": user_id, "email": known.get("email"), "phone": known.get("phone")}.items()
                if v
            }
        )
    resolved = await env.call(
        ti.resolve_identities,
        people,
        env.klaviyo,
        default_region=env.config.phone_default_country,
        cache=flowkit.StoreIdentityCache(env.store),
        verify_cached=True,
    )
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
    deleted = (
        await env.call(tv.request_profile_deletions, [{"id": pid} for _, pid in jobs], env.klaviyo) if jobs else []
    )
    errors = {pos: r.error for (pos, _), r in zip(jobs, deleted, strict=True) if not r.ok}
    for pos, item in enumerate(items):
        if item.key in outcomes:
            continue
        if pos in errors:  # keep local traces: a replay needs them to find the profile again
            outcomes[item.key] = flowkit.api_failure(item, errors[pos], "deletion request")
            continue
        assert item.msg is not None
        from klaviyo_segment.backfill import purge_rejects

        person = {
            "user_id": item.msg.user_id,
            "anonymous_id": item.msg.anonymous_id,
            "email": people[pos].get("email"),
            "phone": people[pos].get("phone"),
        }
        await env.store.purge_person(person)
        await purge_rejects(env.store, person)  # backfill rejects files hold rows about this person too
        # Final against anything older: a re-run batch or a retry from before this delete must not re-create.
        await env.store.put_tombstones(
            {
                "external_id": item.msg.user_id,
                "email": people[pos].get("email"),
                "phone_number": people[pos].get("phone"),
            },
            item.msg.timestamp or env.now,
        )
        if any(p == pos for p, _ in jobs):
            outcomes[item.key] = outcome(item, Status.SENT, "deletion requested")
        else:
            outcomes[item.key] = outcome(item, Status.SKIPPED, "no Klaviyo profile found; local traces purged")


@flow(
    name=NAME,
    flow_run_name=flow_run_name,
    description="Segment identify/alias/delete -> Klaviyo profiles (upsert, identity, deletion).",
    log_prints=False,
)
async def sync_identify(
    messages: list[dict[str, Any]] | None = None,
    batch_ids: list[str] | None = None,
    config: dict[str, Any] | None = None,
    config_block: str | None = None,
) -> dict[str, Any]:
    """Keep Klaviyo profiles in step with Segment identities: one request per person per batch, identity
    conflicts reported instead of duplicated, and deletions honoured in Klaviyo and in our own store."""
    return await run_flow(NAME, messages, batch_ids, config, config_block, process)


SPEC = FlowSpec(name=NAME, flow=sync_identify, process=process, accepts=accepts, routes=routes)
