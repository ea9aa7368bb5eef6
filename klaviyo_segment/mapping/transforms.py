"""Value transforms. Each one is declared with the static type it accepts and produces, so a template that
chains them wrongly (``number`` then ``lowercase``) fails when it is compiled, not mid-stream.

Runtime contract: a transform sees only non-null values (the pipeline passes ``None``/``MISSING`` straight
through), except ``default`` and ``drop_if_empty``, which exist to handle them. A value that cannot be
converted raises :class:`Drop`; the field is left out and the message carries the warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import phonenumbers

from klaviyo_segment.mapping.paths import MISSING

#: Static types used for load-time checks. ``any`` = unknown until runtime (a path).
STATIC_TYPES = ("any", "string", "number", "boolean", "object", "array", "datetime", "phone")


class Drop(Exception):
    """Raised by a transform for a value it cannot convert; ``reason`` never contains the value (PII)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransformError(ValueError):
    """A transform spec that cannot be compiled (unknown name, bad argument, wrong input type)."""


Fn = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Compiled:
    """``op`` is the transform's name: the code generator (codegen.py) inlines some and needs to know which
    never return None/MISSING."""

    fn: Fn
    out_type: str
    handles_missing: bool = False
    op: str = ""


_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@lru_cache(maxsize=65536)
def _parse_phone(raw: str, country: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


#: The message's own country (set by the template while it maps one message); wins over the default country.
MESSAGE_COUNTRY: ContextVar[str | None] = ContextVar("message_country", default=None)


def to_e164(value: Any, country: str) -> str:
    """Normalise a phone to E.164; already-E.164 strings skip libphonenumber (it dominates identify cost). A
    national-format number is read with the message's country when it has one, else ``country``; a number
    invalid there is dropped, never re-read as another country's."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(int(value))
    if not isinstance(value, str):
        raise Drop("not a phone number (not a string)")
    raw = value.strip()
    if _E164.match(raw):
        return raw
    own = MESSAGE_COUNTRY.get()
    result = _parse_phone(raw, own or country)
    if result is None:
        raise Drop(f"not a valid phone number ({'country' if own else 'default country'} {own or country})")
    return result


#: Segment's own timestamp shape (UTC, 'Z', optional ms/us): rewritten without building a datetime.
_ZULU = re.compile(r"(\d{4}-\d\d-\d\d)T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(?:\.(\d{3}|\d{6}))?Z", re.ASCII)


@lru_cache(maxsize=4096)
def _valid_date(date: str) -> bool:
    """Calendar check of a YYYY-MM-DD prefix; cached because a stream covers few distinct days."""
    try:
        datetime.fromisoformat(date)
    except ValueError:
        return False
    return True


def _zulu_iso(value: str) -> str | None:
    """What ``datetime.fromisoformat(value).isoformat()`` returns for a 'Z' timestamp, or None when unsure
    (the caller then takes the datetime path, so odd inputs keep their exact behaviour)."""
    m = _ZULU.fullmatch(value)
    if m is None:
        return None
    date, hh, mm, ss, frac = m.groups()
    if not _valid_date(date):
        return None
    if frac is None or not frac.strip("0"):
        return f"{date}T{hh}:{mm}:{ss}+00:00"
    return f"{date}T{hh}:{mm}:{ss}.{frac:0<6}+00:00"


def to_iso8601(value: Any) -> str:
    """ISO-8601 with an explicit offset; naive datetimes and epoch numbers are taken as UTC (Segment's convention)."""
    if value.__class__ is str and value[-1:] == "Z":
        fast = _zulu_iso(value)
        if fast is not None:
            return fast
    if isinstance(value, bool):
        raise Drop("not a date-time (boolean)")
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            raise Drop("not a date-time (epoch out of range)") from None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Drop("not an ISO-8601 date-time") from None
    else:
        raise Drop("not a date-time")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()


def to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise Drop(f"not a string ({type(value).__name__})")


def to_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise Drop("not a number (boolean)")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise Drop("not a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise Drop("not a finite number")
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    raise Drop(f"not a number ({type(value).__name__})")


def to_int(value: Any) -> int:
    number = to_number(value)
    if isinstance(number, float):
        if not number.is_integer():
            raise Drop("not an integer")
        return int(number)
    return number


_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise Drop("not a boolean")


def _str_op(op: Callable[[str], str]) -> Fn:
    """String transforms leave non-strings alone: a number trait must not be dropped just for being trimmed."""
    return lambda v: op(v) if isinstance(v, str) else v


def _drop_if_empty(v: Any) -> Any:
    if v.__class__ is str:
        return v if v and (v[0] > " " or v.strip()) else MISSING
    if (isinstance(v, (list, dict)) and not v) or (isinstance(v, str) and not v.strip()):
        return MISSING
    return v


def _string_in(in_type: str, name: str) -> str:
    if in_type not in ("any", "string", "datetime", "phone"):
        raise TransformError(f"transform '{name}' expects a string but gets {in_type}")
    return in_type if in_type == "any" else "string"


def compile_transform(spec: Any, in_type: str, *, phone_default_country: str) -> Compiled:
    """Compile one transform spec: a bare name (``trim``) or a one-key mapping (``{default: 0}``)."""
    if isinstance(spec, str):
        name, arg = spec, None
    elif isinstance(spec, dict) and len(spec) == 1:
        name, arg = next(iter(spec.items()))
    else:
        raise TransformError(f"a transform is a name or a one-key mapping, got {spec!r}")
    if name in ("trim", "lowercase", "uppercase"):
        ops: dict[str, Callable[[str], str]] = {"trim": str.strip, "lowercase": str.lower, "uppercase": str.upper}
        op = ops[name]
        return Compiled(_str_op(op), _string_in(in_type, name), op=name)
    if name == "string":
        if in_type in ("object", "array"):
            raise TransformError(f"transform 'string' cannot convert {in_type}")
        return Compiled(to_string, "string", op="string")
    if name in ("number", "int", "bool"):
        if in_type in ("object", "array"):
            raise TransformError(f"transform '{name}' cannot convert {in_type}")
        fn = {"number": to_number, "int": to_int, "bool": to_bool}[name]
        return Compiled(fn, "boolean" if name == "bool" else "number", op=name)
    if name == "e164":
        country: Any = phone_default_country
        if arg is not None:
            country = arg.get("country") if isinstance(arg, dict) else arg
        if not isinstance(country, str) or country.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise TransformError(f"transform 'e164': unknown default country {country!r} (use ISO-3166 alpha-2)")
        if in_type not in ("any", "string", "number"):
            raise TransformError(f"transform 'e164' expects a string but gets {in_type}")
        region = country.upper()
        return Compiled(lambda v: to_e164(v, region), "phone", op="e164")
    if name == "iso8601":
        if in_type not in ("any", "string", "number", "datetime"):
            raise TransformError(f"transform 'iso8601' expects a string or epoch number but gets {in_type}")
        return Compiled(to_iso8601, "datetime", op="iso8601")
    if name == "drop_if_empty":
        return Compiled(_drop_if_empty, in_type, handles_missing=True, op="drop_if_empty")
    if name == "default":
        if arg is None:
            raise TransformError("transform 'default' needs a value: {default: VALUE}")
        fallback = arg
        return Compiled(
            lambda v: fallback if v is None or v is MISSING else v,
            literal_type(fallback) if in_type == "any" else in_type,
            handles_missing=True,
            op="default",
        )
    if name == "map":
        if not isinstance(arg, dict) or not arg:
            raise TransformError("transform 'map' needs a mapping of values: {map: {FROM: TO}}")
        table = dict(arg)
        return Compiled(lambda v: table.get(v, v) if isinstance(v, (str, int, float, bool)) else v, in_type, op="map")
    raise TransformError(
        f"unknown transform {name!r} (known: trim, lowercase, uppercase, string, number, int, bool, e164, "
        "iso8601, drop_if_empty, default, map)"
    )


def literal_type(value: Any) -> str:
    """Static type of a literal, for load-time checks."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "any"
