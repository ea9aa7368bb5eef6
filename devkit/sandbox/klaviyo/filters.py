"""Klaviyo's `filter` query syntax: parse, check against the operation's `x-klaviyo-filters`, evaluate.

The sandbox parses the syntax itself (not with the client's builder) so a wrongly quoted or unsupported
filter fails here the way it fails at Klaviyo: 400 with `source.parameter = "filter"`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-$]*")


class FilterError(ValueError):
    """A filter Klaviyo would reject (syntax, unknown field, or operator not allowed for that field)."""


@dataclass(frozen=True)
class Call:
    """One `op(field, value)` (or `and(...)` / `or(...)` / `not(...)` with nested calls)."""

    op: str
    field: str | None
    args: tuple[Any, ...]


def parse_datetime(text: str) -> datetime:
    """ISO-8601 as Klaviyo accepts it (date only, naive = UTC, `Z` suffix)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, why: str) -> FilterError:
        return FilterError(f"Invalid filter provided: {why} at position {self.pos} in '{self.text}'")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected '{char}'")
        self.pos += 1

    def calls(self) -> list[Call]:
        out = [self.call()]
        while self.peek() == ",":
            self.pos += 1
            out.append(self.call())
        if self.peek():
            raise self.fail("unexpected trailing text")
        return out

    def call(self) -> Call:
        self.skip()
        match = _IDENT.match(self.text, self.pos)
        if not match:
            raise self.fail("expected an operator")
        op = match.group(0)
        self.pos = match.end()
        self.expect("(")
        if op in ("and", "or", "not"):
            nested = [self.call()]
            while self.peek() == ",":
                self.pos += 1
                nested.append(self.call())
            self.expect(")")
            return Call(op, None, tuple(nested))
        self.skip()
        field_match = _IDENT.match(self.text, self.pos)
        if not field_match:
            raise self.fail("expected a field name")
        field = field_match.group(0)
        self.pos = field_match.end()
        args: list[Any] = []
        while self.peek() == ",":
            self.pos += 1
            args.append(self.value())
        self.expect(")")
        return Call(op, field, tuple(args))

    def value(self) -> Any:
        char = self.peek()
        if char in ("'", '"'):
            return self.quoted(char)
        if char == "[":
            self.pos += 1
            items: list[Any] = []
            if self.peek() == "]":
                self.pos += 1
                return items
            items.append(self.value())
            while self.peek() == ",":
                self.pos += 1
                items.append(self.value())
            self.expect("]")
            return items
        match = re.compile(r"[^,()\[\]\s]+").match(self.text, self.pos)
        if not match:
            raise self.fail("expected a value")
        self.pos = match.end()
        return _literal(match.group(0), self)

    def quoted(self, quote: str) -> str:
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise self.fail("unterminated string")


def _literal(token: str, parser: _Parser) -> Any:
    """Unquoted values: datetimes, numbers, booleans and null. Anything else is a quoting mistake."""
    if token in ("true", "false"):
        return token == "true"
    if token == "null":
        return None
    if _DATETIME.match(token):
        return parse_datetime(token)
    try:
        return float(token) if "." in token else int(token)
    except ValueError:
        raise parser.fail(f"'{token}' must be quoted") from None


def parse(text: str, allowed: dict[str, Any] | None) -> list[Call]:
    """Parse and check every leaf against the operation's allowed fields and operators."""
    calls = _Parser(text).calls()
    for call in calls:
        _check(call, allowed or {})
    return calls


def _check(call: Call, allowed: dict[str, Any]) -> None:
    if call.field is None:
        for nested in call.args:
            _check(nested, allowed)
        return
    spec = allowed.get(call.field)
    if spec is None:
        raise FilterError(f"'{call.field}' is not a valid field for this filter.")
    ops = spec.get("operators", {})
    kind = "none" if not call.args else ("list" if isinstance(call.args[0], list) else "single")
    permitted = set(ops.get(kind, []))
    if kind == "single" and "equals" in ops.get("list", []):
        permitted.add("equals")  # the trimmed spec files `equals(name,"x")` under list operators; Klaviyo takes it
    if call.op not in permitted:
        raise FilterError(f"Operator '{call.op}' is not supported for field '{call.field}'.")
    if spec.get("value", {}).get("format") == "date-time" and not all(isinstance(a, datetime) for a in call.args):
        raise FilterError(f"'{call.field}' must be compared with an unquoted datetime.")


Getter = Callable[[str], Any]


def matches(calls: list[Call], get: Getter) -> bool:
    """True when the record (read through `get(field)`) satisfies every top-level call (implicit and)."""
    return all(_eval(call, get) for call in calls)


def _eval(call: Call, get: Getter) -> bool:
    if call.op == "and":
        return all(_eval(c, get) for c in call.args)
    if call.op == "or":
        return any(_eval(c, get) for c in call.args)
    if call.op == "not":
        return not _eval(call.args[0], get)
    assert call.field is not None
    value = get(call.field)
    if call.op == "has":
        return value is not None
    target = call.args[0] if call.args else None
    values = value if isinstance(value, list) else [value]
    if call.op in ("equals", "any") and isinstance(target, list):
        return any(v in target for v in values)
    if call.op == "equals":
        return target in values
    if value is None:
        return False
    if isinstance(value, str) and isinstance(target, datetime):
        value = parse_datetime(value)
    compare = {
        "greater-than": lambda a, b: a > b,
        "greater-or-equal": lambda a, b: a >= b,
        "less-than": lambda a, b: a < b,
        "less-or-equal": lambda a, b: a <= b,
    }.get(call.op)
    if compare is None:
        return False
    try:
        return any(
            compare(v if not isinstance(v, str) or not isinstance(target, datetime) else parse_datetime(v), target)
            for v in values
        )
    except TypeError:
        return False
