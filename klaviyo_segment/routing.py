"""Which flows a Segment message feeds, and the audience helpers those rules share. The receiver routes with
:func:`flows_for`; each flow's rule lives in its module (``SPEC.routes``, next to its ``accepts``).
"""

from __future__ import annotations

from typing import Any

AUDIENCE_EVENTS = ("Audience Entered", "Audience Exited")


def _personas(msg: dict[str, Any]) -> dict[str, Any]:
    context = msg.get("context")
    personas = context.get("personas") if isinstance(context, dict) else None
    return personas if isinstance(personas, dict) else {}


def is_audience_identify(msg: dict[str, Any]) -> bool:
    return msg.get("type") == "identify" and _personas(msg).get("computation_class") == "audience"


def audience_key(msg: dict[str, Any]) -> str | None:
    """The Engage audience a membership message is about (track or identify form), else None."""
    if msg.get("type") == "track" and msg.get("event") in AUDIENCE_EVENTS:
        props = msg.get("properties") or {}
        key = props.get("audience_key") if isinstance(props, dict) else None
        return str(key) if key else (_personas(msg).get("computation_key") or None)
    if is_audience_identify(msg):
        key = _personas(msg).get("computation_key")
        return str(key) if key else None
    return None


def flows_for(msg: dict[str, Any], config: Any) -> list[str]:
    """Every flow that must see ``msg`` (``config`` is an AppConfig), in registry order: each flow declares its
    own rule (``FlowSpec.routes``), so adding a flow does not touch this function."""
    from klaviyo_segment.flows import all_specs

    return [spec.name for spec in all_specs() if spec.routes is not None and spec.routes(msg, config)]
