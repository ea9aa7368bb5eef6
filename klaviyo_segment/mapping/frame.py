"""The identify template applied to a polars frame (backfill): rows become identify messages, then the very
same compiled template maps them, so a CSV row and a live identify with the same data give the same profile.

Column roles: ``userId``/``user_id`` -> userId, ``anonymousId``/``anonymous_id`` -> anonymousId, ``traits`` (a
JSON object string or a struct) -> base traits, every other column -> a trait of that name (a dotted name such
as ``address.city`` nests). Null cells are *absent* traits, never explicit nulls: an empty CSV cell must not
clear a Klaviyo field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import polars as pl

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.mapping.models import ProfileMapping
from klaviyo_segment.mapping.template import CompiledTemplate

_USER = ("userId", "user_id")
_ANON = ("anonymousId", "anonymous_id")


@dataclass(slots=True)
class FrameRow:
    """One input row's mapping; ``row`` is the 0-based position in the input (for rejects files)."""

    row: int
    attributes: dict[str, Any]
    warnings: list[str]

    @property
    def has_identifier(self) -> bool:
        return ProfileMapping(self.attributes).has_identifier


def _set(traits: dict[str, Any], name: str, value: Any) -> None:
    if "." not in name:
        traits[name] = value
        return
    *parents, leaf = name.split(".")
    node = traits
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


def _traits_value(raw: Any, row: int) -> tuple[dict[str, Any], str | None]:
    if raw is None:
        return {}, None
    if isinstance(raw, dict):
        return {k: v for k, v in raw.items() if v is not None}, None
    try:
        decoded = json.loads(raw)
    except (TypeError, ValueError):
        return {}, "traits: value dropped: not valid JSON"
    if not isinstance(decoded, dict):
        return {}, "traits: value dropped: not a JSON object"
    return decoded, None


def _row_messages(frame: pl.DataFrame, offset: int) -> Iterator[tuple[dict[str, Any], list[str]]]:
    columns = frame.columns
    user_col = next((c for c in _USER if c in columns), None)
    anon_col = next((c for c in _ANON if c in columns), None)
    trait_cols = [c for c in columns if c not in (*_USER, *_ANON, "traits")]
    has_traits = "traits" in columns
    for index, row in enumerate(frame.iter_rows(named=True)):
        warnings: list[str] = []
        traits: dict[str, Any] = {}
        if has_traits:
            traits, problem = _traits_value(row["traits"], offset + index)
            if problem:
                warnings.append(problem)
        for col in trait_cols:
            value = row[col]
            if value is not None:
                _set(traits, col, value)
        message: dict[str, Any] = {"type": "identify", "traits": traits}
        if user_col is not None and row[user_col] is not None:
            message["userId"] = row[user_col]
        if anon_col is not None and row[anon_col] is not None:
            message["anonymousId"] = row[anon_col]
        yield message, warnings


def frame_messages(frame: pl.DataFrame | pl.LazyFrame) -> Iterator[dict[str, Any]]:
    """The identify messages a frame stands for (what the per-message path would receive)."""
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    for message, _ in _row_messages(df, 0):
        yield message


def map_frame(template: CompiledTemplate, frame: pl.DataFrame | pl.LazyFrame, *,
              batch_size: int = 10_000) -> Iterator[FrameRow]:
    """Profile attributes per row, streamed in slices so a large backfill never holds every dict at once."""
    if template.kind != "identify":
        raise ConfigError(f"template {template.name!r}: a frame maps profiles, so it needs an identify template")
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    offset = 0
    for part in df.iter_slices(batch_size):
        for index, (message, warnings) in enumerate(_row_messages(part, offset)):
            result = template.apply(message)
            mapping = result[0] if result else ProfileMapping({})
            assert isinstance(mapping, ProfileMapping)
            yield FrameRow(offset + index, mapping.attributes, warnings + mapping.warnings)
        offset += part.height


def map_frame_df(template: CompiledTemplate, frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Same as :func:`map_frame`, collected: columns ``row``, ``attributes`` (JSON text), ``warnings``."""
    rows = list(map_frame(template, frame))
    return pl.DataFrame(
        {"row": [r.row for r in rows], "attributes": [json.dumps(r.attributes, ensure_ascii=False) for r in rows],
         "warnings": [r.warnings for r in rows]},
        schema={"row": pl.Int64, "attributes": pl.String, "warnings": pl.List(pl.String)},
    )
