"""polars path: a frame maps to exactly what the per-message path gives for the same rows."""

from __future__ import annotations

import json

import polars as pl
import pytest

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.mapping import ProfileMapping, compile_template
from klaviyo_segment.mapping.frame import frame_messages, map_frame, map_frame_df
from tests.mapping.helpers import assert_valid

IDENTIFY = compile_template("identify-default")


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u1", None, "u3", None],
            "anonymousId": ["a1", "a2", None, None],
            "email": ["A@Example.com", None, "c@example.com", None],
            "phone": ["(415) 555-2671", "bad", None, None],
            "firstName": ["Åsa", None, "Chen", None],
            "address.city": ["Malmö", None, None, None],
            "traits": ['{"plan": "pro", "last_name": "Lind"}', None, "not json", '{"plan": null}'],
        }
    )


def test_frame_equals_per_message_path() -> None:
    frame = _frame()
    rows = list(map_frame(IDENTIFY, frame, batch_size=3))  # several slices
    messages = list(frame_messages(frame))
    assert [r.row for r in rows] == [0, 1, 2, 3]
    for row, message in zip(rows, messages, strict=True):
        (expected,) = IDENTIFY.apply(message)  # type: ignore[misc]
        assert row.attributes == expected.attributes  # type: ignore[union-attr]
        assert_valid(ProfileMapping(row.attributes))
    assert rows[0].attributes["location"] == {"city": "Malmö"}
    assert rows[0].attributes["properties"] == {"plan": "pro"} and rows[0].attributes["last_name"] == "Lind"
    assert rows[0].attributes["phone_number"] == "+14155552671"
    assert not rows[1].has_identifier and rows[1].warnings[0].startswith("phone_number: value dropped")
    assert rows[2].warnings == ["traits: value dropped: not valid JSON"]
    assert rows[2].attributes["email"] == "c@example.com"
    assert rows[3].attributes == {}  # explicit null in JSON traits, ignored by default; null cells never clear


def test_lazy_frame_and_collected_df() -> None:
    df = map_frame_df(IDENTIFY, _frame().lazy())
    assert df.columns == ["row", "attributes", "warnings"] and df.height == 4
    assert json.loads(df["attributes"][0])["email"] == "a@example.com"


def test_frame_needs_identify_template() -> None:
    with pytest.raises(ConfigError, match="needs an identify template"):
        list(map_frame(compile_template("track-default"), _frame()))
