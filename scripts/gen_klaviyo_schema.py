"""Generate the trimmed Klaviyo schemas the project ships (sandbox, contract tests, check-revision).

Why: tests and the sandbox must not depend on ``../shared`` existing, and the official spec is 3 MB of
prose. This keeps, per operation the project uses: method, path, scopes, rate limits, query parameters and
the fully resolved request-body schema with descriptions removed and every object that declares properties
closed (``additionalProperties: false``), because the live API rejects unknown attributes although the spec
never says so.

Usage: python scripts/gen_klaviyo_schema.py [SPEC_DIR]   (default: ../shared/klaviyo-openapi)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERATIONS = [
    "create_or_update_profile", "create_profile", "update_profile", "get_profiles", "get_profile",
    "merge_profiles", "bulk_import_profiles", "get_bulk_import_profiles_job",
    "get_errors_for_bulk_import_profiles_job", "create_event", "bulk_create_events", "get_events",
    "get_metrics", "get_lists", "get_list", "create_list", "add_profiles_to_list",
    "remove_profiles_from_list", "get_profiles_for_list", "bulk_subscribe_profiles",
    "bulk_unsubscribe_profiles", "request_profile_deletion", "get_accounts",
]
DROP_KEYS = {"description", "example", "examples", "title", "externalDocs", "x-klaviyo-operation-aliases"}
OUT = Path(__file__).resolve().parent.parent / "klaviyo_segment" / "schema"


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
                "ratelimit": {"burst": _rate(rate.get("burst")), "steady": _rate(rate.get("steady")),
                              "daily": _rate(rate.get("daily"))},
                "filters": op.get("x-klaviyo-filters"),
                "parameters": params,
                "request_schema": _resolve(schema, spec) if schema else None,
            }
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
        print(f"{target.name}: {len(trimmed['operations'])} operations"
              + (f", absent in this revision: {', '.join(missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
