"""A compiled accept/reject check for request bodies, in front of the reference ``jsonschema`` validation.

Validating a 1,000-event bulk body with ``jsonschema`` costs tens of milliseconds of CPU, so the emulator could
check fewer events per second than the integration sends. ``fastjsonschema`` turns the same trimmed official
schema into straight-line Python once per schema object (one per operation of a loaded revision) and answers
"valid" an order of magnitude faster. It only decides acceptance: when it rejects, the caller runs
``jsonschema`` to produce Klaviyo-shaped messages and pointers, so error responses are unchanged, and a body
the compiled check rejects but ``jsonschema`` accepts is still accepted (the reference has the last word).

Two settings keep "compiled accepts" implying "jsonschema accepts" (tests/sandbox/test_validation_fastpath.py
checks it on systematic mutations of valid bodies):
- ``use_default=False``: fastjsonschema would otherwise write schema defaults into the request body.
- formats come from jsonschema's own ``FormatChecker``: fastjsonschema's date-time regex accepts
  ``2026-02-30T25:00:00+0000``, which the reference (RFC 3339) rejects.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import fastjsonschema
from jsonschema import FormatChecker

#: The keywords the trimmed schemas use and that this check has been compared against jsonschema for.
SUPPORTED_KEYWORDS = frozenset(
    {"type", "properties", "additionalProperties", "required", "items", "enum", "format", "oneOf", "default"}
)

Check = Callable[[Any], Any]

_FORMATS = FormatChecker()
_LOCK = threading.Lock()
#: id(schema) -> (schema, compiled check or None when the schema is outside SUPPORTED_KEYWORDS).
_CHECKS: dict[int, tuple[dict[str, Any], Check | None]] = {}


def _format(name: str) -> Callable[[Any], bool]:
    def conforms(value: Any) -> bool:
        return _FORMATS.conforms(value, name)

    return conforms


def _keywords(node: Any, found: set[str]) -> None:
    """Every keyword of a schema tree (walks only schema positions, not property names)."""
    if not isinstance(node, dict):
        return
    found.update(node)
    for child in (node.get("properties") or {}).values():
        _keywords(child, found)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _keywords(node[key], found)
    for child in node.get("oneOf") or []:
        _keywords(child, found)


def compile_check(schema: dict[str, Any]) -> Check | None:
    """A compiled check of ``schema`` or None when it uses a keyword not known to behave like jsonschema."""
    found: set[str] = set()
    _keywords(schema, found)
    if not found <= SUPPORTED_KEYWORDS:
        return None
    formats = {name: _format(name) for name in _FORMATS.checkers}
    # a deep copy: the compiled code must not share (or ever mutate) the operations map's schema objects
    definition = {"$schema": "http://json-schema.org/draft-07/schema#", **copy.deepcopy(schema)}
    return fastjsonschema.compile(definition, use_default=False, formats=formats, detailed_exceptions=False)


def check_for(schema: dict[str, Any]) -> Check | None:
    """The cached compiled check of one schema object (compiled on first use, ~0.1 s for the bulk schemas)."""
    cached = _CHECKS.get(id(schema))
    if cached is None or cached[0] is not schema:
        with _LOCK:
            cached = _CHECKS.get(id(schema))
            if cached is None or cached[0] is not schema:
                cached = (schema, compile_check(schema))
                _CHECKS[id(schema)] = cached
    return cached[1]


def accepts(body: Any, schema: dict[str, Any]) -> bool | None:
    """True/False from the compiled check; None when the schema has no compiled check."""
    check = check_for(schema)
    if check is None:
        return None
    try:
        check(body)
    except fastjsonschema.JsonSchemaException:
        return False
    return True
