"""Generate the trimmed Klaviyo schemas the project ships (sandbox, contract tests, check-revision).

Why: tests and the sandbox must not depend on ``../shared`` existing, and the official spec is 3 MB of
prose. This keeps, per operation the project uses: method, path, scopes, rate limits, query parameters and
the fully resolved request-body schema with descriptions removed and every object that declares properties
closed (``additionalProperties: false``), because the live API rejects unknown attributes although the spec
never says so.

It also writes tests/sdk/response-schemas-<revision>.json for the pinned revision: the resolved response
schemas (per status) of the same operations, with ``allOf`` merged and objects closed, so the SDK contract
tests can check that the emulator answers exactly in the spec's shapes (an invented field fails too).

Usage: python scripts/gen_klaviyo_schema.py [SPEC_DIR]   (default: ../shared/klaviyo-openapi)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERATIONS = [
    "create_or_update_profile",
    "create_profile",
    "update_profile",
    "get_profiles",
    "get_profile",
    "merge_profiles",
    "bulk_import_profiles",
    "get_bulk_import_profiles_job",
    "get_errors_for_bulk_import_profiles_job",
    "create_event",
    "bulk_create_events",
    "get_events",
    "get_metrics",
    "get_lists",
    "get_list",
    "create_list",
    "add_profiles_to_list",
    "remove_profiles_from_list",
    "get_profiles_for_list",
    "bulk_subscribe_profiles",
    "bulk_unsubscribe_profiles",
    "request_profile_deletion",
    "get_accounts",
]
DROP_KEYS = {"description", "example", "examples", "title", "externalDocs", "x-klaviyo-operation-aliases"}
OUT = Path(__file__).resolve().parent.parent / "klaviyo_segment" / "schema"
RESPONSES_OUT = Path(__file__).resolve().parent.parent / "tests" / "sdk"
#: The revision whose response schemas the SDK tests use (the one klaviyo-api 24.0.0 sends).
RESPONSE_REVISION = "stable-2026-07-15.json"


def _rate(value: str | None) -> int | None:
    return int(value.split("/")[0]) if value else None


def _resolve(node: Any, spec: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    if isinstance(node, list):
        return [_resolve(item, spec, stack) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if ref in stack:
            return {}
        target: Any = spec
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return _resolve(target, spec, stack + (ref,))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROP_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _resolve(sub, spec, stack) for name, sub in value.items()}
        else:
            out[key] = _resolve(value, spec, stack)
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if out.get("type") == "object" and out.get("properties") and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or op.get("operationId") not in OPERATIONS:
                continue
            body = op.get("requestBody", {}).get("content", {})
            schema = next(iter(body.values()), {}).get("schema") if body else None
            rate = op.get("x-klaviyo-ratelimit") or {}
            params = []
            for p in op.get("parameters", []):
                p = _resolve(p, spec)
                if p.get("in") in ("query", "path"):
                    params.append({k: p[k] for k in ("name", "in", "required", "schema") if k in p})
            ops[op["operationId"]] = {
                "method": method.upper(),
                "path": path,
                "scopes": op.get("x-klaviyo-scopes", []),
                "ratelimit": {
                    "burst": _rate(rate.get("burst")),
                    "steady": _rate(rate.get("steady")),
                    "daily": _rate(rate.get("daily")),
                },
                "filters": op.get("x-klaviyo-filters"),
                "parameters": params,
                "request_schema": _resolve(schema, spec) if schema else None,
            }
    return {"revision": spec["info"]["version"], "operations": dict(sorted(ops.items()))}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two object schemas of an ``allOf``: properties merged by name, ``required`` united."""
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(out.get(key), dict):
            props = dict(out[key])
            for name, sub in value.items():
                props[name] = _merge(props[name], sub) if isinstance(props.get(name), dict) else sub
            out[key] = props
        elif key == "required" and key in out:
            out[key] = sorted(set(out[key]) | set(value))
        else:
            out.setdefault(key, value)
    return out


def _response(node: Any, spec: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """Resolve a response schema: ``$ref`` siblings kept (``nullable``), ``allOf`` merged, objects closed.

    Closing is only sound once ``allOf`` is merged (a closed branch would reject its sibling's properties),
    which is why responses do not reuse :func:`_resolve` as is.
    """
    if isinstance(node, list):
        return [_response(item, spec, stack) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if ref in stack:
            return {}
        target: Any = spec
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        resolved = _response(target, spec, stack + (ref,))
        return {"anyOf": [resolved, {"type": "null"}]} if node.get("nullable") else resolved
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROP_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _response(sub, spec, stack) for name, sub in value.items()}
        else:
            out[key] = _response(value, spec, stack)
    for branch in out.pop("allOf", []):
        out = _merge(out, branch)
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if out.get("properties") and out.get("type", "object") == "object":
        out["type"] = "object"
        out.setdefault("additionalProperties", False)
    return out


def response_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """``{operationId: {status: schema | None}}`` for every response the spec documents (2xx and errors)."""
    ops: dict[str, Any] = {}
    for item in spec["paths"].values():
        for op in item.values():
            if not isinstance(op, dict) or op.get("operationId") not in OPERATIONS:
                continue
            statuses: dict[str, Any] = {}
            for status, response in op.get("responses", {}).items():
                response = _response(response, spec)
                content = response.get("content") or {}
                statuses[status] = next(iter(content.values()), {}).get("schema") if content else None
            ops[op["operationId"]] = statuses
    return {"revision": spec["info"]["version"], "operations": dict(sorted(ops.items()))}


def main(argv: list[str]) -> int:
    spec_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "klaviyo-openapi"
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("stable-2026-07-15.json", "stable-2025-01-15.json"):
        spec = json.loads((spec_dir / name).read_text())
        trimmed = trim(spec)
        missing = sorted(set(OPERATIONS) - set(trimmed["operations"]))
        target = OUT / f"klaviyo-{trimmed['revision']}.json"
        target.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
        print(
            f"{target.name}: {len(trimmed['operations'])} operations"
            + (f", absent in this revision: {', '.join(missing)}" if missing else "")
        )
    responses = response_schemas(json.loads((spec_dir / RESPONSE_REVISION).read_text()))
    RESPONSES_OUT.mkdir(parents=True, exist_ok=True)
    target = RESPONSES_OUT / f"response-schemas-{responses['revision']}.json"
    target.write_text(json.dumps(responses, indent=1, sort_keys=True) + "\n")
    print(f"{target.relative_to(OUT.parent.parent)}: responses of {len(responses['operations'])} operations")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
