"""The Klaviyo target fields a template may write, derived from the pinned revision's trimmed schema so a
template naming a field Klaviyo does not have fails at load time (and a new revision updates the catalogue)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from klaviyo_segment.constants import schema_path

#: Fields we never let templates write: internal ids and request metadata owned by the builders.
_HIDDEN = {"_kx", "meta", "backfill", "metric", "profile"}


@dataclass(frozen=True, slots=True)
class TargetField:
    """``type`` is the static type values are coerced to; ``free`` marks a free-form object (``properties``)
    whose sub-keys are user-defined."""

    path: tuple[str, ...]
    type: str
    nullable: bool
    free: bool = False


def _flatten(schema: dict[str, Any], prefix: tuple[str, ...], out: dict[tuple[str, ...], TargetField]) -> None:
    for name, sub in schema.get("properties", {}).items():
        if name in _HIDDEN:
            continue
        path = (*prefix, name)
        types = sub.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if not types and "oneOf" in sub:
            types = [t.get("type") for t in sub["oneOf"]]
        nullable = "null" in types
        if "object" in types:
            if sub.get("properties"):
                _flatten(sub, path, out)
            else:
                out[path] = TargetField(path, "object", nullable, free=True)
        elif "string" in types and "number" in types:
            out[path] = TargetField(path, "coordinate", nullable)
        elif "number" in types or "integer" in types:
            out[path] = TargetField(path, "number", nullable)
        elif "boolean" in types:
            out[path] = TargetField(path, "boolean", nullable)
        else:
            kind = "datetime" if sub.get("format") == "date-time" else "string"
            out[path] = TargetField(path, "phone" if name == "phone_number" else kind, nullable)


def _attributes(operation: dict[str, Any]) -> dict[str, Any]:
    return operation["request_schema"]["properties"]["data"]["properties"]["attributes"]


@lru_cache(maxsize=4)
def catalogue(kind: str, revision: str | None = None) -> dict[tuple[str, ...], TargetField]:
    """Target fields of an ``identify`` (profile-import attributes) or ``track`` (create_event) template."""
    ops = json.loads((schema_path(revision) if revision else schema_path()).read_text())["operations"]
    out: dict[tuple[str, ...], TargetField] = {}
    if kind == "identify":
        _flatten(_attributes(ops["create_or_update_profile"]), (), out)
        return out
    event = _attributes(ops["create_event"])
    _flatten(event, (), out)
    out[("metric",)] = TargetField(("metric",), "string", False)
    profile = event["properties"]["profile"]["properties"]["data"]["properties"]["attributes"]
    _flatten(profile, ("profile",), out)
    return out


def resolve(kind: str, target: str) -> TargetField:
    """Find the field for a dotted target (``location.zip``, ``properties.plan``); KeyError with a hint if none."""
    fields = catalogue(kind)
    parts = tuple(target.split("."))
    if parts in fields:
        return fields[parts]
    for size in range(len(parts) - 1, 0, -1):
        parent = fields.get(parts[:size])
        if parent is not None and parent.free:
            return TargetField(parts, "any", True)
    names = sorted(".".join(p) + (".<key>" if f.free else "") for p, f in fields.items())
    raise KeyError(f"unknown Klaviyo {kind} field {target!r} (valid: {', '.join(names)})")
