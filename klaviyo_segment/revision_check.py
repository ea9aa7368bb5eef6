"""Compare the Klaviyo operations and request fields we use against another revision of the API.

Why: Klaviyo retires revisions two years after release, and "the live API rejects unknown attributes". Before
moving the pinned revision (or when Klaviyo announces a change), `klaviyo-segment check-revision --spec FILE`
says which of our requests would break. The baseline ("what we use") is the trimmed schema shipped in
``klaviyo_segment/schema``; the other side may be an official OpenAPI file or a trimmed file of the same shape.

Compatibility is judged from the sender's side: removing a field or operation we use, narrowing a type,
dropping an enum value, or making a field (or query parameter) required is breaking; additions and widenings
are not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from klaviyo_segment.constants import schema_path
from klaviyo_segment.errors import ConfigError


@dataclass(frozen=True)
class FieldInfo:
    """One request field flattened to a dotted path (``[]`` marks array items)."""

    types: frozenset[str]
    required: bool
    enum: frozenset[str] | None = None

    @property
    def type_label(self) -> str:
        return "|".join(sorted(self.types)) or "any"


@dataclass(frozen=True)
class Change:
    kind: str  # removed, added, renamed, type, required, enum, operation
    path: str
    detail: str
    breaking: bool


@dataclass
class OperationReport:
    operation_id: str
    changes: list[Change] = field(default_factory=list)

    @property
    def breaking(self) -> bool:
        return any(c.breaking for c in self.changes)


# ---------------------------------------------------------------- loading (full OpenAPI or trimmed file)


def _deref(node: Any, spec: Mapping[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """Resolve $refs and OpenAPI ``nullable`` so a full spec flattens exactly like the trimmed files."""
    if isinstance(node, list):
        return [_deref(item, spec, stack) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if ref in stack:  # recursive schema: stop, as the generator does
            return {}
        target: Any = spec
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return _deref(target, spec, stack + (ref,))
    out = {key: _deref(value, spec, stack) for key, value in node.items() if key not in ("description", "example")}
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def trim_openapi(spec: Mapping[str, Any], operation_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """The subset of a full OpenAPI document check-revision compares, in the trimmed files' shape."""
    wanted = set(operation_ids) if operation_ids is not None else None
    ops: dict[str, Any] = {}
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "operationId" not in op:
                continue
            if wanted is not None and op["operationId"] not in wanted:
                continue
            content = op.get("requestBody", {}).get("content", {})
            first: dict[str, Any] = next(iter(content.values()), {}) if content else {}
            schema = first.get("schema")
            params = [_deref(p, spec) for p in op.get("parameters", [])]
            ops[op["operationId"]] = {
                "method": method.upper(),
                "path": path,
                "scopes": op.get("x-klaviyo-scopes", []),
                "parameters": [
                    {k: p[k] for k in ("name", "in", "required", "schema") if k in p}
                    for p in params
                    if p.get("in") in ("query", "path")
                ],
                "request_schema": _deref(schema, spec) if schema else None,
            }
    return {"revision": spec.get("info", {}).get("version"), "operations": ops}


def load_operations(path: Path, operation_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """Read a spec file, detecting a full OpenAPI document (``openapi`` + ``paths``) vs a trimmed file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--spec {path}: cannot read a JSON spec ({exc})") from exc
    if isinstance(doc, dict) and "paths" in doc and "openapi" in doc:
        return trim_openapi(doc, operation_ids)
    if isinstance(doc, dict) and isinstance(doc.get("operations"), dict):
        return doc
    raise ConfigError(f"--spec {path}: neither an OpenAPI document nor a trimmed schema file")


# ---------------------------------------------------------------- flattening


def _types(node: Mapping[str, Any]) -> set[str]:
    raw = node.get("type")
    types = set(raw) if isinstance(raw, list) else ({raw} if raw else set())
    for key in ("oneOf", "anyOf"):
        for variant in node.get(key, []):
            if isinstance(variant, dict) and "properties" not in variant:
                types |= _types(variant)
            elif isinstance(variant, dict):
                types.add("object")
    if not types and "properties" in node:
        types.add("object")
    return types


def flatten(schema: Mapping[str, Any] | None, prefix: str = "", required: bool = True) -> dict[str, FieldInfo]:
    """Dotted-path view of a request schema. oneOf/anyOf/allOf object variants merge at the same path: a field
    is required only when every variant declaring it requires it (we may send any variant)."""
    out: dict[str, FieldInfo] = {}
    if not isinstance(schema, Mapping):
        return out
    enum = schema.get("enum")
    if prefix:
        out[prefix] = FieldInfo(
            frozenset(_types(schema)), required, frozenset(map(str, enum)) if enum is not None else None
        )
    variants = [schema, *schema.get("allOf", [])]
    variants += [v for key in ("oneOf", "anyOf") for v in schema.get(key, []) if isinstance(v, Mapping)]
    for variant in variants:
        needed = set(variant.get("required", []))
        for name, sub in (variant.get("properties") or {}).items():
            child = f"{prefix}.{name}" if prefix else name
            for path, info in flatten(sub, child, name in needed).items():
                previous = out.get(path)
                if previous is None:
                    out[path] = info
                else:
                    out[path] = FieldInfo(
                        previous.types | info.types,
                        previous.required and info.required,
                        previous.enum
                        if info.enum is None
                        else (info.enum if previous.enum is None else previous.enum | info.enum),
                    )
        if isinstance(variant.get("items"), Mapping):
            out.update(flatten(variant["items"], f"{prefix}[]", True))
    return out


def _parameter_fields(op: Mapping[str, Any]) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for p in op.get("parameters", []):
        schema = p.get("schema") or {}
        enum = schema.get("enum") or (schema.get("items") or {}).get("enum")
        out[f"{p.get('in')}:{p['name']}"] = FieldInfo(
            frozenset(_types(schema)), bool(p.get("required")), frozenset(map(str, enum)) if enum else None
        )
    return out


def operation_fields(op: Mapping[str, Any]) -> dict[str, FieldInfo]:
    return {**_parameter_fields(op), **flatten(op.get("request_schema"))}


# ---------------------------------------------------------------- comparison


def _some(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(values[:limit])
    return f"[{shown}]" + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def compare_operation(op_id: str, used: Mapping[str, Any], other: Mapping[str, Any]) -> OperationReport:
    report = OperationReport(op_id)
    if (used["method"], used["path"]) != (other["method"], other["path"]):
        report.changes.append(
            Change("operation", "", f"{used['method']} {used['path']} is now {other['method']} {other['path']}", True)
        )
    old, new = operation_fields(used), operation_fields(other)
    removed = sorted(set(old) - set(new))
    added = sorted(set(new) - set(old))
    # A removed field whose subtree went with it is reported once, at its top.
    removed_top = [p for p in removed if _parent(p) not in removed]
    added_top = [p for p in added if _parent(p) not in added]
    renamed: dict[str, str] = {}
    for path in removed_top:
        candidates = [
            a
            for a in added_top
            if a not in renamed.values() and _parent(a) == _parent(path) and new[a].types == old[path].types
        ]
        if len(candidates) == 1:
            renamed[path] = candidates[0]
    for path in removed_top:
        if path in renamed:
            report.changes.append(
                Change(
                    "renamed",
                    path,
                    f"renamed to {renamed[path]}? (same type {old[path].type_label}, same parent)",
                    True,
                )
            )
        else:
            report.changes.append(Change("removed", path, f"field removed ({old[path].type_label})", True))
    for path in added_top:
        if path in renamed.values():
            continue
        info = new[path]
        report.changes.append(
            Change(
                "added",
                path,
                f"field added ({info.type_label}{', required' if info.required else ''})",
                info.required and _parent(path) not in added,
            )
        )
    for path in sorted(set(old) & set(new)):
        a, b = old[path], new[path]
        if a.types != b.types:
            narrowed = bool(a.types - b.types) and bool(b.types)
            report.changes.append(Change("type", path, f"type {a.type_label} -> {b.type_label}", narrowed))
        if a.required != b.required:
            report.changes.append(
                Change("required", path, "optional -> required" if b.required else "required -> optional", b.required)
            )
        if a.enum != b.enum and a.enum is not None and b.enum is not None:
            lost, gained = sorted(a.enum - b.enum), sorted(b.enum - a.enum)
            parts = ([f"values removed {_some(lost)}"] if lost else []) + (
                [f"values added {_some(gained)}"] if gained else []
            )
            report.changes.append(Change("enum", path, "; ".join(parts), bool(lost)))
    return report


def compare(used: Mapping[str, Any], other: Mapping[str, Any]) -> list[OperationReport]:
    """One report per operation we use (operations only the other side has are not our concern)."""
    reports = []
    for op_id, op in sorted(used["operations"].items()):
        if op_id not in other["operations"]:
            reports.append(OperationReport(op_id, [Change("operation", "", "operation removed", True)]))
        else:
            reports.append(compare_operation(op_id, op, other["operations"][op_id]))
    return reports


def check_revision(
    spec: Path, base: Path | None = None
) -> tuple[dict[str, Any], dict[str, Any], list[OperationReport]]:
    """Load both sides and compare; returns (used, other, reports)."""
    used = load_operations(base or schema_path())
    other = load_operations(spec, used["operations"].keys())
    return used, other, compare(used, other)
