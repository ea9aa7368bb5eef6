"""The flows, one module per template. Each module exposes the Prefect flow, ``accepts(item)`` (why a message
is not for this flow, or None) and ``process(env, items, outcomes)`` (the template's steps), so ``run``,
``preview`` and the receiver all share one implementation.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from klaviyo_segment.errors import ConfigError

FLOW_MODULES: dict[str, str] = {
    "sync-identify": "sync_identify",
    "forward-track": "forward_track",
    "engagement-to-segment": "engagement_to_segment",
    "sync-audiences": "sync_audiences",
    "onboard-new-users": "onboard_new_users",
    "churn-winback": "churn_winback",
}


def load_flow_module(name: str) -> ModuleType:
    """The module of flow ``name``; an unknown name is a usage error (exit 2) listing the known ones."""
    module = FLOW_MODULES.get(name)
    if module is None:
        raise ConfigError(f"unknown flow {name!r}; known flows: {', '.join(FLOW_MODULES)}")
    return importlib.import_module(f"klaviyo_segment.flows.{module}")
