"""The identify template applied to a polars frame (backfill), column-wise where the template allows it.

Column roles: ``userId``/``user_id`` -> userId, ``anonymousId``/``anonymous_id`` -> anonymousId, ``traits`` (a
JSON object string or a struct) -> base traits, every other column -> a trait of that name (a dotted name such
as ``address.city`` nests). Null cells are *absent* traits, never explicit nulls: an empty CSV cell must not
clear a Klaviyo field.

Why two paths: a million rows through the per-message closures costs seconds of pure Python per field, while
the built-in ``identify-default`` template is a fixed set of string operations polars does natively. So when the
template *is* identify-default (any name) and the reserved columns are strings, the fields are computed as
polars expressions (phone numbers through a cached map over the slice's unique values); rows carrying a JSON
``traits`` value, custom templates and odd column layouts take the per-message path. Both paths give identical
attributes and warnings (tests/mapping/test_frame.py proves it row by row).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.mapping.builtins import IDENTIFY_DEFAULT
from klaviyo_segment.mapping.models import ProfileMapping
from klaviyo_segment.mapping.template import CompiledTemplate
from klaviyo_segment.mapping.transforms import Drop, to_e164

_USER = ("userId", "user_id")
_ANON = ("anonymousId", "anonymous_id")
_ROW = "__row__"
_PHONE_WARN = "__phone_warning__"

#: identify-default's fields as (target path, candidate trait columns in coalesce order). Context-only fields
#: (timezone, ip) cannot come from a column and are absent here. Order = the template's field order.
_VECTOR_FIELDS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("email",), ("email",)),
    (("phone_number",), ("phone", "phone_number", "phoneNumber")),
    (("external_id",), ()),  # the user column
    (("first_name",), ("firstName", "first_name")),
    (("last_name",), ("lastName", "last_name")),
    (("organization",), ("company.name", "company")),
    (("title",), ("title",)),
    (("image",), ("avatar",)),
    (("location", "address1"), ("address.street", "address.address1")),
    (("location", "address2"), ("address.address2",)),
    (("location", "city"), ("address.city",)),
    (("location", "region"), ("address.state", "address.region")),
    (("location", "zip"), ("address.postalCode", "address.postal_code", "address.zip")),
    (("location", "country"), ("address.country",)),
)


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


def _traits_value(raw: Any) -> tuple[dict[str, Any], str | None]:
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


def _roles(columns: list[str]) -> tuple[str | None, str | None, list[str]]:
    user_col = next((c for c in _USER if c in columns), None)
    anon_col = next((c for c in _ANON if c in columns), None)
    trait_cols = [c for c in columns if c not in (*_USER, *_ANON, "traits", _ROW)]
    return user_col, anon_col, trait_cols


def _row_messages(frame: pl.DataFrame) -> Iterator[tuple[dict[str, Any], list[str]]]:
    user_col, anon_col, trait_cols = _roles(frame.columns)
    has_traits = "traits" in frame.columns
    for row in frame.iter_rows(named=True):
        warnings: list[str] = []
        traits: dict[str, Any] = {}
        if has_traits:
            traits, problem = _traits_value(row["traits"])
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
    for message, _ in _row_messages(df):
        yield message


def _per_message(template: CompiledTemplate, frame: pl.DataFrame, rows: list[int]) -> list[FrameRow]:
    out: list[FrameRow] = []
    for row, (message, warnings) in zip(rows, _row_messages(frame), strict=True):
        result = template.apply(message)
        mapping = result[0] if result else ProfileMapping({})
        assert isinstance(mapping, ProfileMapping)
        out.append(FrameRow(row, mapping.attributes, warnings + mapping.warnings))
    return out


# -- the column-wise path ------------------------------------------------------------------------------------
def is_vectorisable(template: CompiledTemplate) -> bool:
    """True when the template maps exactly like identify-default (whatever it is called)."""
    spec = template.spec
    return (
        template.kind == "identify"
        and spec.get("fields") == IDENTIFY_DEFAULT["fields"]
        and spec.get("properties") == IDENTIFY_DEFAULT["properties"]
        and spec.get("match") is None
        and template.nulls == "ignore"
    )


def _columns_fit(frame: pl.DataFrame) -> bool:
    """Reserved columns must be strings (other types coerce per value) and no column may be both a value and
    the parent of a dotted column (``company`` and ``company.name``): the per-message path settles those."""
    names = set(frame.columns)
    user_col, _, _ = _roles(frame.columns)
    reserved = {c for _, cands in _VECTOR_FIELDS for c in cands} | ({user_col} if user_col else set())
    for name in reserved & names:
        if frame.schema[name] not in (pl.String, pl.Null):
            return False
    if names & _COUNTRY_COLUMNS:  # a per-row phone country: the per-message path reads it
        return False
    return not any(n.split(".")[0] in names for n in names if "." in n)


#: Columns that carry a row's own phone country (see template.py, _COUNTRY_TARGETS / _COUNTRY_PATHS).
_COUNTRY_COLUMNS = {"country_code", "countryCode", "address.country"}


def _clean(expr: pl.Expr, lowercase: bool = False) -> pl.Expr:
    """trim (+ lowercase) + drop_if_empty, as the template's string transforms do."""
    expr = expr.cast(pl.String).str.strip_chars()
    if lowercase:
        expr = expr.str.to_lowercase()
    return pl.when(expr.str.len_bytes() > 0).then(expr).otherwise(None)


def _phones(values: pl.Series, country: str) -> tuple[dict[str, str | None], dict[str, str]]:
    """E.164 per unique raw value (libphonenumber is the costly part, so each value is parsed once)."""
    ok: dict[str, str | None] = {}
    warn: dict[str, str] = {}
    for raw in values.unique().drop_nulls().to_list():
        try:
            ok[raw] = to_e164(raw, country)
        except Drop as drop:
            ok[raw] = None
            warn[raw] = f"phone_number: value dropped: {drop.reason}"
    return ok, warn


def _vectorised(template: CompiledTemplate, frame: pl.DataFrame) -> list[FrameRow]:
    names = frame.columns
    user_col, _, trait_cols = _roles(names)
    excluded = template._main.passthrough.excluded if template._main.passthrough else frozenset()
    props = [c for c in trait_cols if c.split(".")[0] not in excluded]
    exprs: list[pl.Expr] = [pl.col(_ROW)]
    targets: list[tuple[str, ...]] = []
    phone_at = -1
    for target, candidates in _VECTOR_FIELDS:
        cols = [user_col] if target == ("external_id",) and user_col else [c for c in candidates if c in names]
        if not cols:
            continue
        source = pl.coalesce([pl.col(c).cast(pl.String) for c in cols])
        expr = _clean(source, lowercase=target == ("email",))
        if target == ("phone_number",):
            phone_at = len(targets)
            expr = expr.alias(_PHONE_WARN)
        exprs.append(expr)
        targets.append(target)
    mapped = frame.select(*exprs, *[pl.col(c) for c in props])
    warnings_col: list[str | None] = [None] * mapped.height
    if phone_at >= 0:
        raw = mapped.get_column(_PHONE_WARN)
        ok, warn = _phones(raw, template._country)
        phones = raw.replace_strict(ok, default=None, return_dtype=pl.String) if ok else raw
        if warn:
            warnings_col = raw.replace_strict(warn, default=None, return_dtype=pl.String).to_list()
        mapped = mapped.with_columns(phones.alias(_PHONE_WARN))
    out: list[FrameRow] = []
    nfields = len(targets)
    for i, values in enumerate(mapped.iter_rows()):
        attrs: dict[str, Any] = {}
        if props:
            properties: dict[str, Any] = {}
            for name, value in zip(props, values[1 + nfields :], strict=False):
                if value is not None:
                    _set(properties, name, value)
            if properties:
                attrs["properties"] = properties
        for target, value in zip(targets, values[1 : 1 + nfields], strict=False):
            if value is None:
                continue
            if len(target) == 1:
                attrs[target[0]] = value
            else:
                attrs.setdefault(target[0], {})[target[1]] = value
        warning = warnings_col[i]
        out.append(FrameRow(values[0], attrs, [warning] if warning else []))
    return out


def map_slice(template: CompiledTemplate, frame: pl.DataFrame, offset: int = 0) -> list[FrameRow]:
    """Map one in-memory slice whose first row is input row ``offset``; rows come back in input order."""
    if template.kind != "identify":
        raise ConfigError(f"template {template.name!r}: a frame maps profiles, so it needs an identify template")
    frame = frame.with_row_index(_ROW, offset=offset)
    rows_of = lambda part: part.get_column(_ROW).to_list()  # noqa: E731
    if not (is_vectorisable(template) and _columns_fit(frame)):
        return _per_message(template, frame, rows_of(frame))
    if "traits" not in frame.columns:
        return _vectorised(template, frame)
    has_traits = pl.col("traits").is_not_null()
    slow = frame.filter(has_traits)
    fast = _vectorised(template, frame.filter(~has_traits).drop("traits"))
    if slow.height == 0:
        return fast
    merged = fast + _per_message(template, slow, rows_of(slow))
    merged.sort(key=lambda r: r.row)
    return merged


def map_frame(
    template: CompiledTemplate, frame: pl.DataFrame | pl.LazyFrame, *, batch_size: int = 10_000
) -> Iterator[FrameRow]:
    """Profile attributes per row, streamed in slices so a large backfill never holds every dict at once."""
    if template.kind != "identify":
        raise ConfigError(f"template {template.name!r}: a frame maps profiles, so it needs an identify template")
    parts = (
        frame.collect_batches(chunk_size=batch_size)
        if isinstance(frame, pl.LazyFrame)
        else frame.iter_slices(batch_size)
    )
    offset = 0
    for part in parts:
        yield from map_slice(template, part, offset)
        offset += part.height


def map_frame_df(template: CompiledTemplate, frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Same as :func:`map_frame`, collected: columns ``row``, ``attributes`` (JSON text), ``warnings``."""
    rows = list(map_frame(template, frame))
    return pl.DataFrame(
        {
            "row": [r.row for r in rows],
            "attributes": [json.dumps(r.attributes, ensure_ascii=False) for r in rows],
            "warnings": [r.warnings for r in rows],
        },
        schema={"row": pl.Int64, "attributes": pl.String, "warnings": pl.List(pl.String)},
    )
