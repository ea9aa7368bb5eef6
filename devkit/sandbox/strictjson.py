"""JSON parsing as the real services do it: RFC 8259 has no ``NaN`` or ``Infinity``.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity`` and turns an overflowing literal such as
``1e400`` into ``inf``. An emulator that stores such a value cannot render it again (Starlette serialises with
``allow_nan=False``), so the inspection API answered 500 long after the request was accepted. Both emulators
parse request bodies here and answer 400 at the door, as Klaviyo and Segment do for a body that is not JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any


class NonFiniteNumber(ValueError):
    """A number JSON cannot represent (``NaN``, ``Infinity`` or a literal beyond the float range)."""


def _constant(name: str) -> Any:
    raise NonFiniteNumber(f"{name} is not a JSON value")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(f"{text} is out of range for a JSON number")
    return value


def loads(raw: str | bytes) -> Any:
    """``json.loads`` that rejects non-finite numbers with ``NonFiniteNumber`` (a ``ValueError``)."""
    return json.loads(raw, parse_constant=_constant, parse_float=_float)
