"""Operation metadata (method, path, rate limit) read from the trimmed Klaviyo schema, loaded once per revision."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from klaviyo_segment import constants


@lru_cache(maxsize=4)
def load_schema(revision: str = constants.KLAVIYO_REVISION) -> dict[str, Any]:
    """The trimmed schema; an unknown revision falls back to the pinned one so a newer header still works."""
    path = constants.schema_path(revision)
    if not path.exists():
        path = constants.schema_path(constants.KLAVIYO_REVISION)
    return json.loads(path.read_text(encoding="utf-8"))


def operation(operation_id: str, revision: str = constants.KLAVIYO_REVISION) -> dict[str, Any]:
    """One operation's metadata; a typo in an operation id is a programming error, so it raises KeyError loudly."""
    ops = load_schema(revision)["operations"]
    if operation_id not in ops:
        raise KeyError(f"unknown Klaviyo operation {operation_id!r}")
    return ops[operation_id]


def format_path(
    operation_id: str, path_params: dict[str, str] | None = None, revision: str = constants.KLAVIYO_REVISION
) -> str:
    """The concrete request path, e.g. ``/api/lists/XyZ/relationships/profiles``."""
    template = operation(operation_id, revision)["path"]
    names = re.findall(r"\{(\w+)\}", template)
    params = path_params or {}
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"missing path parameter {', '.join(missing)} for {operation_id}: {template}")
    # values are percent-encoded: an id can never change the path's shape
    return re.sub(r"\{(\w+)\}", lambda m: quote(str(params[m.group(1)]), safe=""), template)
