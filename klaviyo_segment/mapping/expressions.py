"""Source expressions of a template field, compiled into one closure each.

Forms (see docs/mapping.md): ``"$.traits.email"`` (path), ``{path: ...}``, ``{coalesce: [paths]}``,
``{literal: value}`` (or a bare number/boolean), ``{template: "{$.a|$.b}-{@index}"}``,
``{multiply: [@.price, @.quantity]}``; any of them with
``transform: [...]`` and ``default: value``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from klaviyo_segment.mapping.paths import MISSING, Getter, PathError, compile_path
from klaviyo_segment.mapping.transforms import (
    Compiled,
    Drop,
    TransformError,
    _drop_if_empty,
    compile_transform,
    literal_type,
    to_number,
    to_string,
)

_SOURCES = ("path", "coalesce", "literal", "template", "multiply")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class ExpressionError(ValueError):
    """An expression that cannot be compiled; the template compiler adds the template and field names."""


def _paths(spec: Any) -> Getter:
    try:
        return compile_path(spec)
    except PathError as exc:
        raise ExpressionError(str(exc)) from None


def _coalesce(paths: list[str], scalar: bool) -> Getter:
    """First value that is present and not null; for scalar targets objects/arrays are skipped too, so
    ``coalesce: [$.traits.company.name, $.traits.company]`` handles both company shapes."""
    getters = [_paths(p) for p in paths]

    def get(msg: dict[str, Any], item: Any) -> Any:
        seen_null = False
        for g in getters:
            v = g(msg, item)
            if v is MISSING:
                continue
            if v is None:
                seen_null = True
            elif not scalar or not isinstance(v, (dict, list)):
                return v
        return None if seen_null else MISSING

    return get


def _multiply(paths: list[str]) -> Getter:
    """Product of numeric values (``price x quantity``). The first factor must be present (else MISSING); a later
    absent or null factor counts as 1, as Segment's spec reads a missing ``quantity``. A non-number drops."""
    first, *rest = [_paths(p) for p in paths]

    def get(msg: dict[str, Any], item: Any) -> Any:
        v = first(msg, item)
        if v is MISSING or v is None:
            return v
        product = to_number(v)
        for g in rest:
            factor = g(msg, item)
            if factor is not MISSING and factor is not None:
                product = product * to_number(factor)
        return product

    return get


def _template(text: str) -> Getter:
    parts: list[str | Getter] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[pos : match.start()])
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif match.group(1) is None:
            raise ExpressionError(f"template {text!r}: unbalanced '{token}' (write '{token * 2}' for a literal)")
        else:
            inner = [p.strip() for p in match.group(1).split("|")]
            if not all(inner):
                raise ExpressionError(f"template {text!r}: empty placeholder")
            parts.append(_coalesce(inner, True))
        pos = match.end()
    parts.append(text[pos:])
    pieces = [p for p in parts if p != ""]

    def render(msg: dict[str, Any], item: Any) -> Any:
        out = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            v = piece(msg, item)
            if v is MISSING or v is None:
                return MISSING  # a half-filled id would collide across messages: leave the field out
            out.append(to_string(v))
        return "".join(out)

    return render


@dataclass(frozen=True, slots=True)
class Plan:
    """How a value is produced (source kind + argument, its getter, transform steps): what codegen.py unrolls."""

    kind: str
    arg: Any
    source: Getter
    steps: tuple[Compiled, ...]
    scalar: bool


def compile_expression(
    spec: Any, *, scalar: bool, phone_default_country: str
) -> tuple[Callable[[dict[str, Any], Any], Any], str, list[str]]:
    """Return ``(fn(message, item) -> value | None | MISSING, static type, source paths read)``.

    ``fn`` raises :class:`Drop` when a transform cannot convert the value.
    """
    plan, static, paths = plan_expression(spec, scalar=scalar, phone_default_country=phone_default_country)
    return _closure(plan), static, paths


def plan_expression(spec: Any, *, scalar: bool, phone_default_country: str) -> tuple[Plan, str, list[str]]:
    """Validate an expression; return its :class:`Plan`, static type and the source paths it reads."""
    if isinstance(spec, str):
        if not spec.startswith(("$", "@")):
            raise ExpressionError(
                f"{spec!r} is not a path (paths start with '$.' for the message or '@' for the "
                f"current item); write {{literal: {spec!r}}} for a fixed text"
            )
        spec = {"path": spec}
    elif isinstance(spec, (int, float, bool)) or spec is None:
        spec = {"literal": spec}
    if not isinstance(spec, dict):
        raise ExpressionError(f"expected a path string or a mapping with one of {', '.join(_SOURCES)}, got {spec!r}")
    unknown = set(spec) - {*_SOURCES, "transform", "default"}
    if unknown:
        raise ExpressionError(
            f"unknown expression key(s) {sorted(unknown)} (allowed: {', '.join(_SOURCES)}, transform, default)"
        )
    given = [k for k in _SOURCES if k in spec]
    if len(given) != 1:
        raise ExpressionError(f"an expression needs exactly one of {', '.join(_SOURCES)}; got {given or 'none'}")
    kind = given[0]
    arg = spec[kind]
    paths: list[str] = []
    if kind == "path":
        if not isinstance(arg, str):
            raise ExpressionError(f"'path' must be a string, got {arg!r}")
        source, static, paths = _paths(arg), "any", [arg]
    elif kind == "coalesce":
        if not isinstance(arg, list) or not arg or not all(isinstance(p, str) for p in arg):
            raise ExpressionError(f"'coalesce' needs a non-empty list of paths, got {arg!r}")
        source, static, paths = _coalesce(arg, scalar), "any", list(arg)
    elif kind == "multiply":
        if not isinstance(arg, list) or not arg or not all(isinstance(p, str) for p in arg):
            raise ExpressionError(f"'multiply' needs a non-empty list of paths, got {arg!r}")
        source, static, paths = _multiply(arg), "number", list(arg)
    elif kind == "literal":
        value = arg
        source, static = (lambda msg, item: value), literal_type(arg)
    else:
        if not isinstance(arg, str):
            raise ExpressionError(f"'template' must be a string, got {arg!r}")
        source, static = _template(arg), "string"
    steps = spec.get("transform", [])
    steps = [steps] if isinstance(steps, (str, dict)) else list(steps)
    if "default" in spec:
        steps.append({"default": spec["default"]})
    compiled = []
    for step in steps:
        try:
            t = compile_transform(step, static, phone_default_country=phone_default_country)
        except TransformError as exc:
            raise ExpressionError(str(exc)) from None
        compiled.append(t)
        static = t.out_type
    return Plan(kind, arg, source, tuple(compiled), scalar), static, paths


def _closure(plan: Plan) -> Callable[[dict[str, Any], Any], Any]:
    source, compiled = plan.source, plan.steps
    if not compiled:
        return source
    if any(t.handles_missing and t.fn is not _drop_if_empty for t in compiled):
        chain = [(t.fn, t.handles_missing) for t in compiled]

        def run_chain(msg: dict[str, Any], item: Any) -> Any:
            v = source(msg, item)
            for fn, handles_missing in chain:
                if (v is None or v is MISSING) and not handles_missing:
                    continue
                v = fn(v)
            return v

        return run_chain
    # Hot path: without 'default', an absent or null source stays so; each step may only turn a value MISSING.
    fns = [t.fn for t in compiled]
    if len(fns) == 1:
        f0 = fns[0]

        def run1(msg: dict[str, Any], item: Any) -> Any:
            v = source(msg, item)
            return v if v is None or v is MISSING else f0(v)

        return run1
    if len(fns) == 2:
        f0, f1 = fns

        def run2(msg: dict[str, Any], item: Any) -> Any:
            v = source(msg, item)
            if v is None or v is MISSING:
                return v
            v = f0(v)
            return v if v is MISSING else f1(v)

        return run2

    def run(msg: dict[str, Any], item: Any) -> Any:
        v = source(msg, item)
        for fn in fns:
            if v is None or v is MISSING:
                return v
            v = fn(v)
        return v

    return run


__all__ = ["Drop", "ExpressionError", "Plan", "compile_expression", "plan_expression"]
