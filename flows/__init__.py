"""The flows, one module per template, and the registry: the one list of flows everything else reads.

Each flow module ends with ``SPEC = FlowSpec(...)`` (see ``klaviyo_segment.flowspec``): its Prefect flow,
``process``/``accepts``, routing rule, required config keys. Adding a flow = one module + one line below + its
prefect.yaml deployment (CONTRIBUTING.md, "Adding a flow"; tests/foundation/test_flow_registry.py checks the rest).

A flow's name is its module name with dashes (``sync_identify`` -> ``sync-identify``), so :func:`names` needs no
import and ``klaviyo-segment --help`` stays fast; loading a spec imports its module (and Prefect), lazily.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from klaviyo_segment.errors import ConfigError

if TYPE_CHECKING:
    from klaviyo_segment.flowspec import FlowSpec

#: Event flows (take messages: run, preview, receiver, replay), in routing order. One line per flow.
EVENT_FLOWS: tuple[str, ...] = (
    "sync_identify",
    "forward_track",
    "engagement_to_segment",
    "sync_audiences",
    "onboard_new_users",
    "churn_winback",
    "sync_consent",
)
#: Auxiliary flows: deployments only (started from the UI, the CLI's own commands or, for ingest-segment, the
#: webhook's event), never fed messages as parameters.
AUXILIARY_FLOWS: tuple[str, ...] = (
    "replay_dead_letters",
    "backfill_profiles",
    "ingest_segment",
)


def _name(module: str) -> str:
    return module.replace("_", "-")


def _modules(auxiliary: bool) -> tuple[str, ...]:
    return EVENT_FLOWS + AUXILIARY_FLOWS if auxiliary else EVENT_FLOWS


def names(*, auxiliary: bool = False) -> tuple[str, ...]:
    """The event flows' names in routing order (with ``auxiliary=True``, then the auxiliary ones). No imports."""
    return tuple(_name(m) for m in _modules(auxiliary))


@functools.cache
def _spec(module: str) -> FlowSpec:
    from klaviyo_segment.flowspec import FlowSpec

    spec = getattr(importlib.import_module(f"{__name__}.{module}"), "SPEC", None)
    if not isinstance(spec, FlowSpec):
        raise TypeError(f"flow module {module!r} must end with SPEC = FlowSpec(...)")
    if spec.name != _name(module):
        raise TypeError(f"flow module {module!r} declares {spec.name!r}; its name must be {_name(module)!r}")
    if spec.is_event_flow != (module in EVENT_FLOWS):
        raise TypeError(f"flow {spec.name!r}: an event flow needs a process, an auxiliary flow must not have one")
    return spec


def get_spec(name: str, *, auxiliary: bool = False) -> FlowSpec:
    """The spec of flow ``name``; an unknown name is a usage error (exit 2) listing the known ones.
    Auxiliary flows are unknown unless ``auxiliary=True`` (``run``/``preview``/replay only take event flows)."""
    for module in _modules(auxiliary):
        if _name(module) == name:
            return _spec(module)
    raise ConfigError(f"unknown flow {name!r}; known flows: {', '.join(names(auxiliary=auxiliary))}")


def all_specs(*, auxiliary: bool = False) -> tuple[FlowSpec, ...]:
    """Every event flow's spec in routing order (imports the flow modules; cached)."""
    return tuple(_spec(m) for m in _modules(auxiliary))


def required_config_keys(name: str) -> tuple[str, ...]:
    """The keys flow ``name`` needs; a name that is not a registered flow needs none."""
    if name not in names(auxiliary=True):
        return ()
    return get_spec(name, auxiliary=True).required_config_keys


def load_flow_module(name: str) -> ModuleType:
    """The module of event flow ``name`` (kept for callers that predate :func:`get_spec`; prefer the spec)."""
    spec = get_spec(name)
    return importlib.import_module(f"{__name__}.{spec.name.replace('-', '_')}")
