"""Compile a template block into ONE generated Python function with every field unrolled.

Why: mapping runs per message on one core, and a closure per field (source, each transform, coercion) cost
~85% of the time. The generated function reads shared path prefixes once (``$.traits`` for ten fields),
inlines plain-key lookups, the string transforms (trim/lowercase/uppercase/string/drop_if_empty) and skips
guards and coercions the value's known type makes no-ops. Everything else calls the same functions the closures
call, so the output (values, key order, warnings) is exactly what the per-field interpretation gave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from klaviyo_segment.mapping.expressions import Plan
from klaviyo_segment.mapping.paths import MISSING, Getter, compile_path, parse_path
from klaviyo_segment.mapping.transforms import Drop, _drop_if_empty, to_string

Build = Callable[[dict[str, Any], Any, list[str]], dict[str, Any]]

_STR_METHODS = {"trim": "strip", "lowercase": "lower", "uppercase": "upper"}
_NEVER_NULL = {"number", "int", "bool"}  # transforms that return a value or raise Drop
_NEVER_NULL_STR = {"e164", "iso8601"}
_EMPTY_STR = "not v or (v[0] <= ' ' and not v.strip())"  # drop_if_empty's test on a str


@dataclass(slots=True)
class Field:
    """One compiled target field; ``coerce_type`` is the Klaviyo type ``coerce`` converts to."""

    target: str
    path: tuple[str, ...]
    plan: Plan
    coerce: Callable[[Any], Any] | None
    coerce_type: str
    clear: bool  # send explicit nulls (nulls: clear on a nullable, non-identifier field)


@dataclass(slots=True)
class Passthrough:
    source: Getter
    source_path: str
    excluded: frozenset[str]
    rename: dict[str, str]
    keep_nulls: bool
    #: Objects merged in before ``source`` (``from: [$.properties, "@"]``): the later source wins per key.
    bases: tuple[tuple[str, Getter], ...] = ()


class _Writer:
    """Accumulates source lines, constants and hoisted path prefixes for one generated function."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {
            "MISSING": MISSING,
            "Drop": Drop,
            "to_string": to_string,
            "_drop_if_empty": _drop_if_empty,
        }
        self.prefixes: dict[tuple[str, ...], str] = {}
        self.prefix_lines: list[str] = []

    def const(self, value: Any) -> str:
        name = f"k{len(self.ns)}"
        self.ns[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def _prefix(self, steps: tuple[str, ...]) -> str:
        """Variable holding the value at ``$.steps`` / ``@.steps`` (None when absent or under a non-dict),
        computed once per call; ``steps[0]`` is the root."""
        if steps in self.prefixes:
            return self.prefixes[steps]
        if steps == ("@",):
            expr = "item[0] if item is not None else None"
        elif steps[0] == "$" and len(steps) == 2:
            expr = f"msg.get({steps[1]!r})"
        else:
            parent = self._prefix(steps[:-1])
            expr = f"{parent}.get({steps[-1]!r}) if isinstance({parent}, dict) else None"
        name = f"p{len(self.prefixes)}"
        self.prefix_lines.append(f"    {name} = {expr}")
        self.prefixes[steps] = name
        return name

    def getter(self, path: str, compiled: Getter) -> str:
        """An expression reading ``path``: inlined for plain ``$.a.b`` keys, else a call to the compiled getter."""
        root, steps = parse_path(path)
        if root not in ("$", "@") or not steps or not all(isinstance(s, str) for s in steps):
            return f"{self.const(compiled)}(msg, item)"
        keys = (root, *(str(s) for s in steps))
        if keys[0] == "$" and len(keys) == 2:  # the message itself is a dict: no check (as the closures)
            return f"msg.get({keys[1]!r}, MISSING)"
        parent = self._prefix(keys[:-1])
        return f"({parent}.get({keys[-1]!r}, MISSING) if isinstance({parent}, dict) else MISSING)"


def _source(w: _Writer, plan: Plan, depth: int) -> None:
    """Emit code that sets ``v`` to the source value (value, None or MISSING)."""
    if plan.kind == "path":
        w.emit(depth, f"v = {w.getter(plan.arg, plan.source)}")
    elif plan.kind == "literal":
        w.emit(depth, f"v = {w.const(plan.arg)}")
    elif plan.kind in ("template", "multiply"):
        w.emit(depth, f"v = {w.const(plan.source)}(msg, item)")
    else:  # coalesce: first present non-null (scalar targets also skip objects/arrays)
        skip = " and not isinstance(_c, (dict, list))" if plan.scalar else ""
        w.emit(depth, "_n = False")
        for path in plan.arg:
            w.emit(depth, f"_c = {w.getter(path, compile_path(path))}")
            w.emit(depth, f"if _c is not None and _c is not MISSING{skip}:")
            w.emit(depth + 1, "v = _c")
            w.emit(depth, "else:")
            w.emit(depth + 1, "if _c is None:")
            w.emit(depth + 2, "_n = True")
            depth += 1
        w.emit(depth, "v = None if _n else MISSING")


def _place(w: _Writer, field: Field, depth: int) -> None:
    path = field.path
    node = "out" + "".join(f".setdefault({k!r}, {{}})" for k in path[:-1])
    w.emit(depth, f"{node}[{path[-1]!r}] = v")


def _tail(w: _Writer, field: Field, depth: int, state: str) -> None:
    """Coerce and store a value known to be neither None nor MISSING (``state``: 'str' or 'val')."""
    if field.coerce is not None:
        if field.coerce_type == "string":
            if state != "str":
                w.emit(depth, "if v.__class__ is not str:")
                w.emit(depth + 1, "v = to_string(v)")
        else:
            w.emit(depth, f"v = {w.const(field.coerce)}(v)")
    _place(w, field, depth)


def _guard(w: _Writer, depth: int, opened: list[int]) -> int:
    """Open ``if v is a value:``; a None/MISSING value skips every later step (the closures' contract)."""
    w.emit(depth, "if v is not None and v is not MISSING:")
    opened.append(depth)
    return depth + 1


def _field(w: _Writer, field: Field, depth: int) -> None:
    steps = field.plan.steps
    _source(w, field.plan, depth)
    if any(t.handles_missing and t.op != "drop_if_empty" for t in steps):  # 'default': every step sees nulls
        for t in steps:
            call = f"v = {w.const(t.fn)}(v)"
            if t.handles_missing:
                w.emit(depth, call)
            else:
                w.emit(depth, "if v is not None and v is not MISSING:")
                w.emit(depth + 1, call)
        opened: list[int] = []
        _tail(w, field, _guard(w, depth, opened), "val")
    else:
        opened = []
        state = (
            "str"
            if field.plan.kind == "literal" and isinstance(field.plan.arg, str)
            else ("val" if field.plan.kind == "literal" and field.plan.arg is not None else "maybe")
        )
        i = 0
        while i < len(steps):
            if state == "maybe":
                depth = _guard(w, depth, opened)
                state = "val"
            op = steps[i].op
            if op in _STR_METHODS:
                chain = ""
                while i < len(steps) and steps[i].op in _STR_METHODS:
                    chain += f".{_STR_METHODS[steps[i].op]}()"
                    i += 1
                drop = i < len(steps) and steps[i].op == "drop_if_empty"
                i += drop
                inner = depth
                if state != "str":
                    w.emit(depth, "if isinstance(v, str):")
                    inner = depth + 1
                w.emit(inner, f"v = v{chain}")
                if drop:
                    w.emit(inner, f"if {_EMPTY_STR}:")
                    w.emit(inner + 1, "v = MISSING")
                    if state != "str":
                        w.emit(depth, "else:")
                        w.emit(depth + 1, "v = _drop_if_empty(v)")
                    state = "maybe"
                continue
            if op == "drop_if_empty":
                if state == "str":
                    w.emit(depth, f"if {_EMPTY_STR}:")
                    w.emit(depth + 1, "v = MISSING")
                else:
                    w.emit(depth, "v = _drop_if_empty(v)")
                state = "maybe"
            elif op == "string":
                if state != "str":
                    w.emit(depth, "if v.__class__ is not str:")
                    w.emit(depth + 1, "v = to_string(v)")
                state = "str"
            else:
                w.emit(depth, f"v = {w.const(steps[i].fn)}(v)")
                state = "str" if op in _NEVER_NULL_STR else "val" if op in _NEVER_NULL else "maybe"
            i += 1
        if state == "maybe":
            depth = _guard(w, depth, opened)
            state = "val"
        _tail(w, field, depth, state)
    if field.clear:  # a None source (or a map to None) stays None through the steps: send the explicit null
        for level in reversed(opened):
            w.emit(level, "elif v is None:")
            _place(w, field, level + 1)


def _passthrough(w: _Writer, pt: Passthrough, props_key: str) -> None:
    key = f"{w.const(pt.rename)}.get(_k, _k)" if pt.rename else "_k"
    conds = ([f"_k not in {w.const(pt.excluded)}"] if pt.excluded else []) + (
        [] if pt.keep_nulls else ["_v is not None"]
    )
    cond = f" if {' and '.join(conds)}" if conds else ""
    if pt.bases:  # several sources: merge in order, later keys win
        w.emit(1, "props = {}")
        for path, getter in (*pt.bases, (pt.source_path, pt.source)):
            w.emit(1, f"src = {w.getter(path, getter)}")
            w.emit(1, "if isinstance(src, dict) and src:")
            w.emit(2, f"props.update({{{key}: _v for _k, _v in src.items(){cond}}})")
        w.emit(1, "if props:")
        w.emit(2, f"out[{props_key!r}] = props")
        return
    w.emit(1, f"src = {w.getter(pt.source_path, pt.source)}")
    w.emit(1, "if isinstance(src, dict) and src:")
    w.emit(2, f"props = {{{key}: _v for _k, _v in src.items(){cond}}}")
    w.emit(2, "if props:")
    w.emit(3, f"out[{props_key!r}] = props")


def generate(fields: list[Field], passthrough: Passthrough | None, props_key: str, label: str) -> tuple[Build, str]:
    """Return ``(build(message, item, warnings) -> dict, its source)``; the source is kept for debugging."""
    w = _Writer()
    w.emit(1, "out = {}")
    if passthrough is not None:
        _passthrough(w, passthrough, props_key)
    for field in fields:
        w.emit(1, "try:")
        _field(w, field, 2)
        w.emit(1, "except Drop as exc:")
        w.emit(2, f"warnings.append({w.const(f'{field.target}: value dropped: ')} + exc.reason)")
    w.emit(1, "return out")
    source = "\n".join(["def build(msg, item, warnings):", *w.prefix_lines, *w.lines])
    # the label only names the code object in tracebacks: keep it printable whatever the template's name
    code = compile(source, f"<template {label.encode('unicode_escape').decode('ascii')[:80]}>", "exec")
    exec(code, w.ns)  # noqa: S102 - the source is generated from validated specs; values are constants
    return w.ns["build"], source
