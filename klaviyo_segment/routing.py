"""Which flows a Segment message feeds. The receiver routes with it, and ``run FLOW`` uses it to say
"not for this flow" — one rule set, so a message behaves the same whichever way it arrives.
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
    """Every flow that must see ``msg`` (``config`` is an AppConfig)."""
    kind = msg.get("type")
    flows: list[str] = []
    if kind in ("identify", "alias", "delete", "group"):
        flows.append("sync-identify")
    if kind == "track":
        event = msg.get("event")
        if event in AUDIENCE_EVENTS:
            flows.append("sync-audiences")
        else:
            flows.append("forward-track")
        if event in (config.onboarding.events or []):
            flows.append("onboard-new-users")
    if kind in ("page", "screen"):
        flows.append("forward-track")
    if kind == "identify":
        traits = msg.get("traits") if isinstance(msg.get("traits"), dict) else {}
        if is_audience_identify(msg) or any(k in traits for k in (config.audiences or {})):
            flows.append("sync-audiences")
    churn = config.churn
    if churn is not None:
        key = audience_key(msg)
        traits = msg.get("traits") if isinstance(msg.get("traits"), dict) else {}
        if (key and key == churn.audience_key) or (kind == "identify" and churn.trait in traits):
            if "churn-winback" not in flows:
                flows.append("churn-winback")
    return flows
