"""Ids that ``preview`` invents for what only a lookup would tell (``{profile:email=a@b.com}``).

Why its own module: the preview's recording transport writes them and the identity service must recognise
them (two placeholders for one person are not an identity conflict); the service layer may not import the
preview, which sits above the flows.
"""

from __future__ import annotations

from typing import Any


def placeholder(kind: str, field: str, value: Any) -> str:
    return f"{{{kind}:{field}={value}}}"


def is_placeholder(value: str) -> bool:
    """Ids the preview invented (``{profile:email=...}``); never produced by Klaviyo."""
    return value.startswith("{profile:")
