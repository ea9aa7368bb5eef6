"""One typed accessor for JSON objects of unknown shape (Segment messages, Klaviyo payloads): a field that is
not an object reads as an empty one, so callers need no ``isinstance`` dance and type checkers see a dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def obj(parent: Any, key: str) -> dict[str, Any]:
    """``parent[key]`` when both are JSON objects, else ``{}``."""
    value = parent.get(key) if isinstance(parent, Mapping) else None
    return value if isinstance(value, dict) else {}
