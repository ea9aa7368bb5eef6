"""Event filters: allow/deny globs on the event name and property predicates. Also used by templates'
``match`` blocks, so "which events does this handle" is written the same way everywhere."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.mapping.paths import MISSING, PathError, compile_path

_NUMERIC = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
OPERATORS = ("equals", "not_equals", "in", "not_in", "exists", *_NUMERIC)

Predicate = Callable[[dict[str, Any]], bool]


def compile_globs(patterns: list[str], where: str) -> re.Pattern[str] | None:
    """One regex for a glob list (case-sensitive, as Segment event names are); None for an empty list."""
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"{where}: expected a list of event-name globs, got {patterns!r}")
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compile_predicate(spec: Any, where: str) -> tuple[Predicate, str]:
    """``{path: $.properties.total, gt: 10}`` or ``{property: total, in: [a, b]}`` -> (predicate, description)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: a predicate is a mapping like {{property: plan, equals: pro}}, got {spec!r}")
    spec = dict(spec)
    if ("path" in spec) == ("property" in spec):
        raise ConfigError(f"{where}: a predicate needs exactly one of 'path' ($.properties.x) or 'property' (x)")
    path = spec.pop("path") if "path" in spec else f"$.properties.{spec.pop('property')}"
    try:
        getter = compile_path(str(path))
    except PathError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if len(spec) != 1 or next(iter(spec)) not in OPERATORS:
        raise ConfigError(
            f"{where}: a predicate needs exactly one operator of {', '.join(OPERATORS)}; got {sorted(spec) or 'none'}"
        )
    op, arg = next(iter(spec.items()))
    text = f"{path} {op} {arg!r}"
    if op in _NUMERIC:
        if not _is_number(arg):
            raise ConfigError(f"{where}: '{op}' compares numbers, got {arg!r}")
        cmp = _NUMERIC[op]

        def numeric(msg: dict[str, Any]) -> bool:
            v = getter(msg, None)
            if isinstance(v, str):
                try:
                    v = float(v)
                except ValueError:
                    return False
            return _is_number(v) and cmp(v, arg)

        return numeric, text
    if op in ("in", "not_in"):
        if not isinstance(arg, list):
            raise ConfigError(f"{where}: '{op}' needs a list of values, got {arg!r}")
        values = list(arg)
        if op == "in":
            return (lambda msg: getter(msg, None) in values), text
        return (lambda msg: getter(msg, None) not in values), text
    if op == "exists":
        if not isinstance(arg, bool):
            raise ConfigError(f"{where}: 'exists' takes true or false, got {arg!r}")
        return (lambda msg: (getter(msg, None) not in (MISSING, None)) is arg), text
    if op == "equals":
        return (lambda msg: getter(msg, None) == arg), text
    return (lambda msg: getter(msg, None) != arg), text


class TrackFilter:
    """Which track events a deployment forwards. Deny wins over allow; ``where`` predicates must all hold."""

    def __init__(
        self,
        allow: list[str] | None = None,
        deny: list[str] | None = None,
        where: list[dict[str, Any]] | None = None,
        *,
        name: str = "track",
    ) -> None:
        self.allow = ["*"] if allow is None else allow
        self.deny = [] if deny is None else deny
        self._allow = compile_globs(self.allow, f"{name}.allow")
        self._deny = compile_globs(self.deny, f"{name}.deny")
        self._where = [compile_predicate(p, f"{name}.where[{i}]") for i, p in enumerate(where or [])]

    def check(self, message: dict[str, Any]) -> str | None:
        """None when the event may be sent, else the skip reason (bounded set of strings, fit for counting)."""
        event = message.get("event")
        if not isinstance(event, str):
            return "filtered: no event name"
        if self._deny is not None and self._deny.match(event):
            return "filtered: event in deny list"
        if self._allow is None or not self._allow.match(event):
            return "filtered: event not in allow list"
        for predicate, text in self._where:
            if not predicate(message):
                return f"filtered: where {text} not met"
        return None
