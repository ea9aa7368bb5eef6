"""Source expressions: JSONPath-like paths into a Segment message, compiled once into plain closures.

Supported: ``$`` (the message), ``$.a.b``, ``$.a[0]``, ``$.a[*]`` (wildcard, yields a list), ``$["odd key"]``,
``@`` / ``@.a`` (the current element inside an ``expand`` block) and ``@index`` (its position).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any


#: Absent key (as opposed to an explicit JSON null, which is ``None``): only nulls may clear Klaviyo fields.
class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

#: ``getter(message, item)`` where ``item`` is ``(element, index)`` inside an expansion, else ``None``.
Getter = Callable[[dict[str, Any], "tuple[Any, int] | None"], Any]

_TOKEN = re.compile(r"""\.([A-Za-z_][\w-]*)|\[(\d+)\]|\[\*\]|\[["']([^"']+)["']\]""")


class PathError(ValueError):
    """A path that cannot be parsed; the template compiler turns it into a ConfigError naming the field."""


def parse_path(path: str) -> tuple[str, list[str | int | None]]:
    """Split a path into its root (``$`` or ``@``) and steps (key, index, or None for ``[*]``)."""
    if path == "@index":
        return "@index", []
    if not path or path[0] not in "$@":
        raise PathError(f"path {path!r} must start with '$' (the message) or '@' (the current item)")
    steps: list[str | int | None] = []
    pos = 1
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if not match:
            raise PathError(f'path {path!r}: cannot parse at {path[pos:]!r} (use .key, [0], [*] or ["key"])')
        key, index, quoted = match.groups()
        if key is not None or quoted is not None:
            steps.append(key if key is not None else quoted)
        elif index is not None:
            steps.append(int(index))
        else:
            steps.append(None)
        pos = match.end()
    return path[0], steps


def _walk(value: Any, steps: list[str | int | None]) -> Any:
    for i, step in enumerate(steps):
        if step is None:
            if not isinstance(value, list):
                return MISSING
            rest = steps[i + 1 :]
            found = [_walk(v, rest) for v in value]
            return [v for v in found if v is not MISSING]
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return MISSING
            value = value[step]
        else:
            if not isinstance(value, dict):
                return MISSING
            value = value.get(step, MISSING)
            if value is MISSING:
                return MISSING
    return value


def compile_path(path: str) -> Getter:
    """Build a getter; the common 1-3 plain-key cases get unrolled closures because they dominate the hot path."""
    root, steps = parse_path(path)
    if root == "@index":
        return lambda msg, item: item[1] if item is not None else MISSING
    plain = all(isinstance(s, str) for s in steps)
    keys: list[str] = [str(s) for s in steps] if plain else []
    if root == "$" and plain and len(steps) == 1:
        (a,) = keys
        return lambda msg, item: msg.get(a, MISSING)
    if root == "$" and plain and len(steps) == 2:
        a, b = keys

        def get2(msg: dict[str, Any], item: Any) -> Any:
            v = msg.get(a)
            return v.get(b, MISSING) if isinstance(v, dict) else MISSING

        return get2
    if root == "$" and plain and len(steps) == 3:
        a, b, c = keys

        def get3(msg: dict[str, Any], item: Any) -> Any:
            v = msg.get(a)
            if not isinstance(v, dict):
                return MISSING
            v = v.get(b)
            return v.get(c, MISSING) if isinstance(v, dict) else MISSING

        return get3
    if root == "$":
        return lambda msg, item: _walk(msg, steps)
    return lambda msg, item: _walk(item[0], steps) if item is not None else MISSING


def first_key(path: str, prefix: str) -> str | None:
    """The top-level key under ``prefix`` that ``path`` reads (``$.traits.address.city`` -> ``address``); used to
    keep traits already mapped to profile fields out of ``properties``."""
    try:
        root, steps = parse_path(path)
        proot, psteps = parse_path(prefix)
    except PathError:
        return None
    if root != proot or steps[: len(psteps)] != psteps or len(steps) <= len(psteps):
        return None
    key = steps[len(psteps)]
    return key if isinstance(key, str) else None
