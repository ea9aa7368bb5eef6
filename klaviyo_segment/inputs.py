"""Reading message files for ``run``/``preview``: JSON lines or one JSON array. A malformed line is one
failed message (contract), never a reason to reject the whole file.

``iter_messages`` streams: ``run`` stages a 1,000,000-message file into the state store without ever holding
the file (or its messages) in memory. ``read_messages`` is the list form ``preview`` uses.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.runtime import MALFORMED

#: Bytes read at a time from a JSON-array file (an element larger than this just needs several reads).
READ_SIZE = 1 << 20
_WS = " \t\r\n"


def read_messages(path: str | Path) -> list[Any]:
    """Every message of the file (see :func:`iter_messages`)."""
    return [message for message, _ in iter_messages(path)]


def iter_messages(path: str | Path) -> Iterator[tuple[Any, int]]:
    """Yield ``(message, bytes_read_so_far)``; the byte count drives a progress bar. Each message is made
    storable by the receiver's text rules (``ingress.door``): a NUL, or a lone surrogate in an id, makes that one
    message a failed input (its reason kept); other lone surrogates become U+FFFD. Without this one such message
    failed the whole run before it started, or was retried forever."""
    for message, consumed in _iter_raw(Path(path)):
        yield _storable(message), consumed


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


def _iter_raw(path: Path) -> Iterator[tuple[Any, int]]:
    """A malformed JSON line becomes ``{MALFORMED: reason}`` (one failed message); an unreadable file or a broken
    JSON array is a ConfigError (exit 2), raised as soon as it is found."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read input file {str(path)!r}: {exc.__class__.__name__}: {exc}") from None
    with handle:
        head = handle.read(4096)
        handle.seek(0)
        try:
            first = head.decode("utf-8", errors="ignore").lstrip()[:1]
        except Exception:  # pragma: no cover - decode with errors="ignore" does not raise
            first = ""
        if first == "[":
            yield from _iter_array(handle, path)
        else:
            yield from _iter_lines(handle, path)


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read input file {str(path)!r}: UnicodeDecodeError: {exc}") from None


def _iter_lines(handle: IO[bytes], path: Path) -> Iterator[tuple[Any, int]]:
    consumed = 0
    for number, raw in enumerate(handle, start=1):
        consumed += len(raw)
        line = _decode(raw, path)
        if not line.strip():
            continue
        try:
            yield json.loads(line), consumed
        except json.JSONDecodeError as exc:
            yield {MALFORMED: f"line {number}: {exc.msg} (column {exc.colno})"}, consumed


def _iter_array(handle: IO[bytes], path: Path) -> Iterator[tuple[Any, int]]:
    """One JSON array, element by element (``raw_decode`` on a sliding buffer), so its size does not matter."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()  # a read may cut a multi-byte character
    buf, pos, consumed, eof = "", 0, 0, False

    def fail(reason: str) -> ConfigError:
        return ConfigError(f"input file {str(path)!r} starts a JSON array but is not valid JSON: {reason}")

    def more() -> bool:
        nonlocal buf, pos, consumed, eof
        if eof:
            return False
        chunk = handle.read(READ_SIZE)
        consumed += len(chunk)
        eof = not chunk
        try:
            text = utf8.decode(chunk, final=eof)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"cannot read input file {str(path)!r}: UnicodeDecodeError: {exc}") from None
        buf = buf[pos:] + text
        pos = 0
        return not eof

    def skip_ws() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more():
                return ""

    if skip_ws() != "[":  # pragma: no cover - the caller checked the first character
        raise fail("expected '['")
    pos += 1
    if skip_ws() == "]":
        pos += 1
    else:
        while True:
            if not skip_ws():
                raise fail("unexpected end of file inside the array")
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if more():
                        continue
                    raise fail(f"{exc.msg} (char {exc.pos})") from None
                if end == len(buf) and not eof and more():
                    continue  # a number (or literal) may go on in the next read: decode it again
                break
            pos = end
            yield value, consumed
            sep = skip_ws()
            if sep == ",":
                pos += 1
                continue
            if sep == "]":
                pos += 1
                break
            raise fail(f"expected ',' or ']', found {sep!r}" if sep else "unexpected end of file inside the array")
    if skip_ws():
        raise fail("extra data after the array")
