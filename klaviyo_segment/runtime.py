"""What every flow shares: resolving configuration and credentials, loading its messages (inline or from
state-store batches), the common Segment rules, and finishing a run (dead letters, delivered marks, artifact,
batch completion). A flow file then only holds its template's own steps.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from klaviyo_segment import redact, run_logs, run_report
from klaviyo_segment.config import AppConfig
from klaviyo_segment.errors import ApiError, ConfigError, RetryLater, is_transient
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.outcomes import Outcome, Status, summarize
from klaviyo_segment.segment_spec import SegmentMessage, klaviyo_opted_out, message_key, parse_message
from klaviyo_segment.store.state import delivered_key  # re-exported: flows import it from here

logger = logging.getLogger("klaviyo_segment.runtime")
for _name in ("klaviyo_segment", "prefect.flow_runs", "prefect.task_runs"):
    redact.install(logging.getLogger(_name))
run_logs.route_to_prefect()  # retry/pacing warnings of the clients show up in the flow run's logs

MALFORMED = "__malformed_json__"


def lease_seconds() -> float:
    """$KLAVIYO_SEGMENT_LEASE_SECONDS (default 600), read at lease time: long enough for a large batch; an
    expired lease lets another worker take the batch over."""
    from klaviyo_segment.settings import env_settings

    return env_settings().lease_seconds


@dataclass
class Item:
    """One input message as the flow sees it: its key, the raw dict and the parsed model (or why not)."""

    index: int
    key: str
    raw: Any
    msg: SegmentMessage | None = None


@dataclass
class FlowEnv:
    flow: str
    config: AppConfig
    store: Any  # klaviyo_segment.store.Store
    klaviyo: Any  # klaviyo_segment.clients.klaviyo.KlaviyoClient
    segment: Any = None  # SegmentCredentials, only for flows that send to Segment
    preview: bool = False
    #: Preview only: where Segment requests go instead of the network.
    segment_transport: Any = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    run_id: str = field(default_factory=lambda: f"local-{uuid.uuid4().hex[:12]}")

    async def call(self, task: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a Prefect task; in preview (no Prefect, no network) call its function directly."""
        if self.preview:
            from prefect.logging import disable_run_logger

            with disable_run_logger():
                return await task.fn(*args, **kwargs)
        return await task(*(_opaque_input(a) for a in args), **{k: _opaque_input(v) for k, v in kwargs.items()})


def _opaque_input(value: Any) -> Any:
    """Task inputs wrapped in Prefect's ``quote``: the task still runs (and shows in the UI) as before, but
    Prefect no longer walks a 5,000-item list of dicts to look for futures and states (``visit_collection``,
    ``resolve_to_final_result``: over 1 ms of CPU per message). We never pass futures between tasks, so there is
    no dependency to track; Prefect unwraps the value before calling the task function."""
    from prefect.utilities.annotations import quote

    return quote(value) if isinstance(value, (list, tuple, dict, set, frozenset)) else value


def load_flow_config(config: dict[str, Any] | None, config_block: str | None = None) -> AppConfig:
    """Inline config document > named MappingTables block > the ``default`` block if saved > defaults."""
    if config is not None:
        return AppConfig.from_document(config, source="config parameter")
    from klaviyo_segment.blocks.mapping import MappingTables
    from klaviyo_segment.settings import load_saved_block

    block = load_saved_block(MappingTables, config_block or "default")
    if block is None:
        if config_block:
            raise ConfigError(
                f"mapping-tables block {config_block!r} not found (create it with "
                "`klaviyo-segment blocks apply --config FILE --name NAME`)"
            )
        return AppConfig()
    return block.to_config()


def _current_run_id() -> str | None:
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        return str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    except Exception:  # pragma: no cover - outside Prefect
        return None


@asynccontextmanager
async def open_env(
    flow: str,
    config: dict[str, Any] | None = None,
    *,
    config_block: str | None = None,
    preview: bool = False,
    http: httpx.AsyncClient | None = None,
    segment: bool = False,
    pacer: Any = None,
    segment_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[FlowEnv]:
    """Everything a flow run needs, closed again at the end. Preview uses a throwaway store."""
    from klaviyo_segment.clients.klaviyo import KlaviyoClient
    from klaviyo_segment.settings import credentials_document, resolve_klaviyo, resolve_segment, resolve_store_url
    from klaviyo_segment.store import Store

    if preview:  # preview sends nothing and needs no Prefect: no saved-block lookup either
        app_config = AppConfig.from_document(config, source="config") if config else AppConfig()
    else:
        app_config = load_flow_config(config, config_block)
    app_config.require(flow)
    raw = credentials_document(config)
    if preview:
        from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials

        credentials = KlaviyoCredentials(api_key=SecretStr("pk_preview"), base_url="https://preview.invalid")
        tmp = tempfile.mkdtemp(prefix="klaviyo-segment-preview-")
        store_url = f"sqlite:///{Path(tmp) / 'preview.db'}"
    else:
        credentials = resolve_klaviyo(config=raw)
        store_url = resolve_store_url(config=raw)
    segment_credentials = None
    if segment:
        if preview:
            from klaviyo_segment.blocks.segment import SegmentCredentials

            segment_credentials = SegmentCredentials(write_key=SecretStr("preview"), base_url="https://preview.invalid")
        else:
            segment_credentials = resolve_segment(config=raw)
    store = await Store.open(store_url)
    try:
        async with KlaviyoClient(credentials, http=http, pacer=pacer) as client:
            env = FlowEnv(
                flow=flow,
                config=app_config,
                store=store,
                klaviyo=client,
                segment=segment_credentials,
                preview=preview,
                segment_transport=segment_transport,
            )
            env.run_id = _current_run_id() or env.run_id
            yield env
    finally:
        await store.close()


@dataclass
class Inputs:
    items: list[Item]
    batch_ids: list[str]
    #: The batches came from the inbox, where the dispatcher retries them: a transient failure is retried then
    #: (``finish``). Batches ``run --input`` staged, and inline messages, dead-letter it at once.
    retriable: bool = False


def _parse(index: int, raw: Any) -> tuple[Item, Outcome | None]:
    key = message_key(raw, index)
    if isinstance(raw, dict) and MALFORMED in raw:
        return Item(index, key, raw), Outcome(
            message_id=key, status=Status.FAILED, reason=f"malformed JSON: {raw[MALFORMED]}"
        )
    parsed = parse_message(raw)
    if isinstance(parsed, str):
        return Item(index, key, raw), Outcome(
            message_id=key, status=Status.FAILED, reason=parsed, type=raw.get("type") if isinstance(raw, dict) else None
        )
    return Item(index, key, raw, parsed), None


#: A flow's optional ``load_items(raws)`` (``FlowSpec.load_items``): its own items and pre-recorded outcomes, for
#: inputs that are not Segment messages (engagement-to-segment takes Klaviyo webhook records).
ItemLoader = Callable[[list[Any]], tuple[list[Item], dict[str, Outcome]]]


def load_segment_items(raws: list[Any]) -> tuple[list[Item], dict[str, Outcome]]:
    """The default loader: one item per Segment message; parse failures become failed outcomes up front."""
    items: list[Item] = []
    outcomes: dict[str, Outcome] = {}
    for index, raw in enumerate(raws):
        item, parse_outcome = _parse(index, raw)
        items.append(item)
        if parse_outcome is not None and item.key not in outcomes:
            outcomes[item.key] = parse_outcome
    return items, outcomes


async def load_inputs(
    env: FlowEnv, messages: Sequence[Any] | None, batch_ids: Sequence[str] | None, load_items: ItemLoader | None = None
) -> tuple[Inputs, dict[str, Outcome]]:
    """Exactly one of ``messages``/``batch_ids``; batches are leased so a dead worker's batch is retaken.
    ``load_items`` (a flow's ``FlowSpec.load_items``) turns the raw inputs into items; default: Segment messages."""
    if (messages is None) == (batch_ids is None):
        raise ConfigError("pass exactly one of 'messages' or 'batch_ids'")
    raws: list[Any]
    leased: list[str] = []
    if batch_ids is not None:
        batches = await env.store.lease(list(batch_ids), env.run_id, lease_seconds())
        retriable = bool(batches)  # inbox batches, which the dispatcher retries (``run --input`` stages its own)
        # then batches `klaviyo-segment run` staged for this run, then (a Retry of this Failed run) its own
        for take in (env.store.take_over_staged, env.store.retake_own):
            got = {b.id for b in batches}
            if len(got) < len(set(batch_ids)):
                batches += await take([i for i in batch_ids if i not in got], env.run_id, lease_seconds())
        raws = [m for b in batches for m in b.messages]
        leased = [b.id for b in batches]
    else:
        raws, retriable = list(messages or []), False
    items, outcomes = (load_items or load_segment_items)(raws)
    return Inputs(items=items, batch_ids=leased, retriable=retriable and bool(leased)), outcomes


def outcome(
    item: Item, status: Status, reason: str | None = None, error: ApiError | None = None, warnings: Sequence[str] = ()
) -> Outcome:
    return Outcome(
        message_id=item.key,
        status=status,
        type=item.msg.type if item.msg else None,
        reason=reason,
        error=error,
        warnings=list(warnings),
    )


async def common_rules(
    env: FlowEnv, items: Sequence[Item], outcomes: dict[str, Outcome], accepts: Callable[[Item], str | None]
) -> list[Item]:
    """Apply what every flow honours, in order: parse failures, 'not for this flow', Segment's integrations
    opt-out, duplicates inside the input, and messages this flow already delivered. Returns the rest."""
    todo: list[Item] = []
    seen: set[str] = set()
    candidates: list[Item] = []
    for item in items:
        if item.key in outcomes or item.key in seen:
            continue  # parse failure already recorded, or a repeat that finish() reports as a duplicate
        seen.add(item.key)
        assert item.msg is not None
        reason = accepts(item)
        if reason:
            outcomes[item.key] = outcome(item, Status.SKIPPED, reason)
        elif klaviyo_opted_out(item.msg):
            outcomes[item.key] = outcome(item, Status.SKIPPED, "opted out (integrations)")
        else:
            candidates.append(item)
    done = await env.store.is_done([delivered_key(env.flow, i.key) for i in candidates]) if candidates else set()
    for item in candidates:
        if delivered_key(env.flow, item.key) in done:
            outcomes[item.key] = outcome(item, Status.SKIPPED, "duplicate of an already delivered messageId")
        else:
            todo.append(item)
    return todo


async def finish(env: FlowEnv, inputs: Inputs, outcomes: dict[str, Outcome]) -> dict[str, Any]:
    """Record what happened: dead letters for failures, delivered marks for sends, the run's artifact,
    and the leased batches' completion. Returns the contract summary plus the per-message outcomes."""
    ordered: list[Outcome] = []
    seen: set[str] = set()
    for item in inputs.items:
        out = outcomes.get(item.key)
        if out is None:  # a flow bug must not lose a message: count it as failed and keep it
            out = outcomes[item.key] = outcome(item, Status.FAILED, "internal: no outcome recorded")
        if item.key in seen:
            ordered.append(
                out.model_copy(update={"status": Status.SKIPPED, "reason": "duplicate messageId in this batch"})
                if out.status != Status.SKIPPED
                else out
            )
            continue
        seen.add(item.key)
        ordered.append(out)
    summary = summarize(env.flow, ordered)
    if not env.preview:
        from klaviyo_segment.store import DeadLetterIn

        raws = {item.key: item.raw for item in inputs.items}
        # A transient error (429, 5xx, network) that outlived the client's retries says nothing about the
        # message: retry it with its batch after a backoff (capped by the store) instead of dead-lettering it.
        failed: list[Outcome] = []
        later: list[Outcome] = []
        for o in ordered:
            if o.status == Status.FAILED:
                (later if inputs.retriable and is_transient(o.error) else failed).append(o)
        dead_letter_ids: list[str] = []
        if failed:
            dead_letter_ids = await env.store.add_dead_letters(
                [
                    DeadLetterIn(
                        flow=env.flow,
                        message=_as_dict(raws.get(o.message_id)),
                        message_id=o.message_id,
                        reason=o.reason or "failed",
                        error=o.error.model_dump() if o.error else None,
                    )
                    for o in failed
                ]
            )
            await maybe_emit_threshold_event(env.store, env.config.dead_letters.threshold)
        sent_ids = [o.message_id for o in ordered if o.status == Status.SENT]
        if sent_ids:
            await env.store.claim_once([delivered_key(env.flow, key) for key in sent_ids])
            await _resolve_delivered(env, sent_ids)
        if later:
            error = f"{len(later)} message(s) failed transiently, e.g. {later[0].message_id}: {later[0].reason}"
            await _record_batch_failure(env, inputs.batch_ids, redact.redact(error)[:500])
            raise RetryLater(f"{env.flow}: {error}; the batch is retried after a backoff")
        status = "partial" if failed else "done"
        for batch_id in inputs.batch_ids:
            await env.store.complete(batch_id, env.run_id, status=status)
        await _artifact(env, ordered)
        await run_report.rename_run(env.flow, inputs.batch_ids, len(inputs.items))
        run_report.log_run(env.flow, summary, list(zip(dead_letter_ids, failed, strict=False)))
    summary["outcomes"] = [o.model_dump(mode="json", exclude_defaults=True) for o in ordered]
    return summary


async def _resolve_delivered(env: FlowEnv, message_ids: Sequence[str]) -> None:
    """A message delivered now (a UI Retry of the run, a replay, the sender's resend) closes its open dead letter:
    otherwise the dead-letter list and the threshold alert keep reporting a failure that no longer exists."""
    from klaviyo_segment.store.dead_letters import dead_letter_id

    resolved = await env.store.resolve_dead_letters([dead_letter_id(env.flow, key) for key in message_ids])
    if resolved:
        run_report.log_resolved(env.flow, resolved)


THRESHOLD_EVENT = "klaviyo-segment.dead-letters.threshold"
THRESHOLD_RESOURCE = "klaviyo-segment.dead-letters"


async def maybe_emit_threshold_event(store: Any, threshold: int) -> bool:
    """Emit ``klaviyo-segment.dead-letters.threshold`` when the open dead letters reach ``threshold``, so an
    automation can notify someone (README). Never fails the caller: the failures are already recorded."""
    try:
        count = await store.count_dead_letters()
        if count < threshold:
            return False
        from prefect.events import emit_event

        emit_event(
            event=THRESHOLD_EVENT,
            resource={"prefect.resource.id": THRESHOLD_RESOURCE},
            payload={"count": count, "threshold": threshold},
        )
        return True
    except Exception as exc:
        logger.warning("could not emit %s: %s", THRESHOLD_EVENT, exc)
        return False


def _as_dict(raw: Any) -> dict[str, Any]:
    return raw if isinstance(raw, dict) else {"raw": raw}


async def _artifact(env: FlowEnv, outcomes: Sequence[Outcome]) -> None:
    """A table per message type of sent/skipped/failed with reasons, on the flow run (UI-visible)."""
    if _current_run_id() is None:
        return
    from prefect.artifacts import acreate_table_artifact

    rows: Counter[tuple[str, str, str]] = Counter()
    for o in outcomes:
        rows[(o.type or "unknown", o.status.value, o.reason or "")] += 1
    table = [{"type": t, "status": s, "reason": r, "messages": n} for (t, s, r), n in sorted(rows.items())]
    attempt = run_report.attempt()
    # Keyed by attempt: a retried run shows "attempt 2" next to attempt 1 instead of two identical cards.
    key = f"{env.flow}-outcomes" if attempt == 1 else f"{env.flow}-outcomes-attempt-{attempt}"
    try:
        await acreate_table_artifact(
            table=table, key=key, description=f"{env.flow}: per-message outcomes of this run (attempt {attempt})"
        )
    except Exception as exc:  # an artifact must never fail a run that delivered its messages
        logger.warning("could not create the outcomes artifact: %s", exc)


def is_old(msg: SegmentMessage, now: datetime, hours: float) -> bool:
    return msg.timestamp is not None and (now - msg.timestamp).total_seconds() > hours * 3600


Processor = Callable[[FlowEnv, list[Item], dict[str, Outcome]], Awaitable[None]]


async def run_flow(
    flow: str,
    messages: Sequence[Any] | None,
    batch_ids: Sequence[str] | None,
    config: dict[str, Any] | None,
    config_block: str | None,
    process: Processor,
    *,
    segment: bool = False,
    load_items: ItemLoader | None = None,
) -> Any:
    """The skeleton of every event flow: open, load, process (the template's steps), finish.

    Returns the summary (the run ends Completed) or, when any message failed, a Failed state carrying it
    (:mod:`klaviyo_segment.run_state`): callers run the flow with ``return_state=True`` and ``summary_of``."""
    from klaviyo_segment.gc_tuning import tune_once
    from klaviyo_segment.run_state import final_state

    tune_once()
    async with open_env(flow, config, config_block=config_block, segment=segment) as env:
        return final_state(await process_inputs(env, messages, batch_ids, process, load_items))


async def process_inputs(
    env: FlowEnv,
    messages: Sequence[Any] | None,
    batch_ids: Sequence[str] | None,
    process: Processor,
    load_items: ItemLoader | None = None,
) -> dict[str, Any]:
    """Load, process and finish in an open env: the one sequence a run, a preview and a replay share.

    Processing is isolated per message (:func:`process_isolated`): a message that makes the template raise is
    failed (and dead-lettered by ``finish``) on its own. A failure that no single message explains is systemic:
    it is recorded on the leased batches and raised, so the lease expires and another attempt runs; the store
    caps attempts (``store.inbox.MAX_ATTEMPTS``) and then dead-letters the batch with that error.
    """
    from klaviyo_segment.isolation import failure_text, process_isolated, refuse_unstorable_keys

    inputs, outcomes = await load_inputs(env, messages, batch_ids, load_items)
    refuse_unstorable_keys(inputs.items, outcomes)
    try:
        await process_isolated(env, inputs.items, outcomes, process)
    except Exception as exc:
        if inputs.batch_ids and not env.preview:
            await _record_batch_failure(env, inputs.batch_ids, failure_text(exc))
        raise
    return await finish(env, inputs, outcomes)


async def _record_batch_failure(env: FlowEnv, batch_ids: Sequence[str], error: str) -> None:
    """Keep the error on the batches (the attempt cap dead-letters with it); never mask the original error."""
    try:
        for batch_id in batch_ids:
            await env.store.record_failure(batch_id, env.run_id, error)
    except Exception as store_exc:  # noqa: BLE001 - the run fails with the original error anyway
        logger.warning("could not record the failure on the batches: %s", type(store_exc).__name__)


async def process_spec(env: FlowEnv, spec: FlowSpec, messages: Sequence[Any]) -> dict[str, Any]:
    """``process_inputs`` for an event flow's spec (its ``process`` and optional ``load_items``)."""
    assert spec.process is not None, f"{spec.name} is not an event flow"
    return await process_inputs(env, messages, None, spec.process, spec.load_items)
