"""``FlowSpec``: everything the rest of the project needs to know about one flow, declared once in its module.

Before, a flow was "declared" in five places (a module table, a name tuple, the router, the config's required keys,
the CLI help) and its interface (``FLOW``, ``accepts``, ``process``, ``load_items``, ``SENDS_TO_SEGMENT``) was
duck-typed through ``getattr``. Now each flow module ends with ``SPEC = FlowSpec(...)`` and
``klaviyo_segment.flows`` holds the one registry; run, preview, the receiver, the dispatcher, replay and the
config all read the spec. This module imports nothing heavy (no Prefect) so the registry stays cheap to name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from klaviyo_segment.config import AppConfig
    from klaviyo_segment.runtime import ItemLoader, Processor

#: ``routes(msg, config)``: must this flow see this raw Segment message? (``config`` is an AppConfig)
Router = Callable[[dict[str, Any], "AppConfig"], bool]


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """One flow's declared interface.

    An *event flow* takes messages (``process`` is set): ``run``/``preview``/replay/the receiver feed it.
    An *auxiliary flow* (``process`` is None: replay-dead-letters, backfill-profiles) is a deployment only.
    """

    #: The Prefect flow name, also the deployment name in prefect.yaml and the CLI's FLOW argument.
    name: str
    #: The Prefect flow object (what a run, the inline dispatcher and ``serve --dispatch deployments`` start).
    flow: Any
    #: ``process(env, items, outcomes)``: the template's steps, shared by run, preview and replay.
    process: Processor | None = None
    #: ``accepts(item, ...)``: why an item is not for this flow, or None (informational; ``process`` applies it).
    accepts: Callable[..., str | None] | None = None
    #: Turns raw inputs into items when they are not Segment messages (engagement-to-segment); None = Segment.
    load_items: ItemLoader | None = None
    #: The flow sends to Segment, so its env needs a Segment client (and preview records Segment requests).
    sends_to_segment: bool = False
    #: Dotted config keys the flow cannot run without: checked at load time (exit 2), never mid-run.
    required_config_keys: tuple[str, ...] = ()
    #: The flow's part of ``routing.flows_for``; None = never fed Segment messages (e.g. fed by Klaviyo webhooks).
    routes: Router | None = None
    #: Runs of this flow one process may have in flight at once (inline dispatch, ``run``). More than one only
    #: where messages do not depend on each other's order (events carry their own time): while one run waits on
    #: Klaviyo's rate limit, the next loads and maps, so the limit, not the run's own CPU phases, sets the pace.
    #: Flows whose messages must apply in order per person (identify, audiences, consent) keep 1.
    overlapping_runs: int = 1

    def __post_init__(self) -> None:
        flow_name = getattr(self.flow, "name", self.name)
        if flow_name != self.name:
            raise ValueError(f"FlowSpec {self.name!r}: the Prefect flow is named {flow_name!r}")
        if self.process is None and (self.accepts or self.load_items or self.routes):
            raise ValueError(f"FlowSpec {self.name!r}: accepts/load_items/routes need a process (event flow)")
        if self.overlapping_runs < 1:
            raise ValueError(f"FlowSpec {self.name!r}: overlapping_runs must be >= 1")
        for key in self.required_config_keys:
            if key.count(".") != 1:
                raise ValueError(f"FlowSpec {self.name!r}: required key {key!r} must be 'section.field'")

    @property
    def is_event_flow(self) -> bool:
        return self.process is not None

    @property
    def description(self) -> str:
        """The Prefect flow's description (help text), so it is written once, in the ``@flow`` decorator."""
        return str(getattr(self.flow, "description", None) or "")

    @property
    def entrypoint_function(self) -> str:
        """The flow function's name, as a prefect.yaml entrypoint names it (``flows/x.py:<function>``)."""
        fn = getattr(self.flow, "fn", self.flow)
        return str(getattr(fn, "__name__", ""))
