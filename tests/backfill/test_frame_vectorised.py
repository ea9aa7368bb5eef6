"""The column-wise mapping path gives exactly what the per-message path gives (no traits column at all)."""

from __future__ import annotations

import polars as pl

from klaviyo_segment.mapping import compile_template
from klaviyo_segment.mapping.frame import frame_messages, is_vectorisable, map_slice

IDENTIFY = compile_template("identify-default")


def test_vectorised_equals_per_message() -> None:
    frame = pl.DataFrame(
        {
            "user_id": ["u1", " ", None, "u4"],
            "email": ["  MiXed@Example.COM ", "", None, "x@y.io"],
            "phoneNumber": ["(415) 555-2671", "+14155552671", "garbage", None],
            "company.name": ["Acme", None, "  ", None],
            "address.postalCode": ["02139", None, None, None],
            "address.foo": ["dropped", None, None, None],
            "age": [41, None, 3, None],
            "prefs.color": ["red", None, None, "blue"],
        }
    )
    assert is_vectorisable(IDENTIFY)
    rows = map_slice(IDENTIFY, frame, offset=100)
    assert [r.row for r in rows] == [100, 101, 102, 103]
    for row, message in zip(rows, frame_messages(frame), strict=True):
        (expected,) = IDENTIFY.apply(message)  # type: ignore[misc]
        assert row.attributes == expected.attributes  # type: ignore[union-attr]
        assert row.warnings == expected.warnings  # type: ignore[union-attr]
    assert rows[0].attributes["location"] == {"zip": "02139"} and rows[0].attributes["organization"] == "Acme"
    assert rows[0].attributes["properties"] == {"age": 41, "prefs": {"color": "red"}}
    assert rows[2].warnings and "phone_number" not in rows[2].attributes
