"""Reading message files for ``run``/``preview``: JSON lines or one JSON array. A malformed line is one
failed message (contract), never a reason to reject the whole file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.runtime import MALFORMED


def read_messages(path: str | Path) -> list[Any]:
    """The file's messages, each made storable by the receiver's text rules (``ingress.door``): a NUL, or a lone
    surrogate in an id, makes that one message a failed input (its reason kept); other lone surrogates become
    U+FFFD. Without this one such message failed the whole run before it started (a flow run's parameters must
    encode as UTF-8), or was retried forever."""
    return [_storable(message) for message in _read(Path(path))]


def _storable(message: Any) -> Any:
    from klaviyo_segment.ingress.door import Invalid, message_id_of, storable_text

    try:
        return storable_text(message)
    except Invalid as exc:
        refused: dict[str, Any] = {MALFORMED: f"refused: {exc.reason}"}
        mid = message_id_of(message)
        if mid:
            refused["messageId"] = mid
        return refused


def _read(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read input file {str(path)!r}: {exc.__class__.__name__}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"input file {str(path)!r} starts a JSON array but is not valid JSON: {exc}") from None
        return list(data)
    messages: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            messages.append(json.loads(line))
        except json.JSONDecodeError as exc:
            messages.append({MALFORMED: f"line {number}: {exc.msg} (column {exc.colno})"})
    return messages
