"""The emulator's operations map: which spec operation a request is, and that operation's limits and schema.

Everything the sandbox knows about an endpoint comes from the trimmed schema generated from the official
OpenAPI document, never from the client code, so a client bug cannot be mirrored by the emulator.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from klaviyo_segment.constants import schema_path

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Operation:
    """One operation of the spec; ``burst``/``steady``/``daily`` are ``None`` where the spec gives no figure."""

    id: str
    method: str
    path: str
    scopes: list[str] = field(default_factory=list)
    burst: int | None = None
    steady: int | None = None
    daily: int | None = None
    request_schema: dict[str, Any] | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)


def load_operations(path: Path | None = None) -> dict[str, Operation]:
    """Read the trimmed schema into ``{operationId: Operation}`` (default: the pinned revision's file)."""
    raw = json.loads((path or schema_path()).read_text(encoding="utf-8"))
    ops: dict[str, Operation] = {}
    for op_id, spec in raw["operations"].items():
        limits = spec.get("ratelimit") or {}
        ops[op_id] = Operation(
            id=op_id,
            method=str(spec["method"]).upper(),
            path=str(spec["path"]),
            scopes=list(spec.get("scopes") or []),
            burst=limits.get("burst"),
            steady=limits.get("steady"),
            daily=limits.get("daily"),
            request_schema=spec.get("request_schema"),
            parameters=list(spec.get("parameters") or []),
        )
    return ops


def _compile(template: str) -> re.Pattern[str]:
    """Template -> anchored regex; a parameter never spans a ``/`` so nested resources stay distinct."""
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out).rstrip("/") + "/?$")


class Router:
    """Compiled routes of one operations map; literal-heavy templates are tried first so they win over ``{id}``."""

    def __init__(self, operations: dict[str, Operation]) -> None:
        self.operations = operations
        ordered = sorted(operations.values(), key=lambda op: (-len(_PARAM.sub("", op.path)), op.path))
        self._routes = [(op.method, _compile(op.path), op) for op in ordered]

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        method = method.upper()
        for route_method, pattern, op in self._routes:
            if route_method != method:
                continue
            m = pattern.match(path)
            if m:
                return op, m.groupdict()
        return None


@lru_cache(maxsize=1)
def default_router() -> Router:
    """The router for the pinned revision, built once per process."""
    return Router(load_operations())


def match(method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
    """Find the operation and path parameters for a request, or ``None`` for paths the spec does not define."""
    return default_router().match(method, path)
