"""The compiled body check against the reference ``jsonschema`` validation: same verdict, same errors.

Valid bodies of every operation with a request schema (from the product's builders) are mutated systematically
along the official schema: each required key removed, an unknown key added to each closed object, each declared
field given a wrong type, each enum field an unknown value, each date field a non-RFC-3339 value. Every
mutant must get the same accept/reject from the compiled check as from ``jsonschema``, and ``validate_body``
(the sandbox's path) must answer exactly the reference errors.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.builders.bulk_events import bulk_create_events_body
from klaviyo_segment.constants import schema_path
from klaviyo_segment.devkit.sandbox.klaviyo import fastcheck
from klaviyo_segment.devkit.sandbox.klaviyo.operations import load_operations
from klaviyo_segment.devkit.sandbox.klaviyo.validation import validate_body, validate_body_reference

REVISIONS = ("2025-01-15", "2026-07-15")
PROFILE = {
    "email": "zoë@example.com",
    "phone_number": "+14155552671",
    "external_id": "u-42",
    "first_name": "Zoë",
    "location": {"city": "Berlin", "country": "DE", "latitude": 52.52, "region": None},
    "properties": {"plan": "pro", "tags": ["a"]},
}
EVENTS = [
    {
        "metric": "Order Completed",
        "profile": {"email": "a@example.com"},
        "properties": {"n": i},
        "time": datetime(2026, 7, 1, 12, i, tzinfo=UTC),
        "value": 9.5,
        "value_currency": "EUR",
        "unique_id": f"m-{i}",
    }
    for i in range(3)
] + [{"metric": "Viewed", "profile": {"external_id": "x"}}]


def valid_bodies() -> dict[str, dict[str, Any]]:
    """One representative valid body per operation that has a request schema (pinned revision)."""
    return {
        "add_profiles_to_list": b.list_relationships_body(["01A", "01B"]),
        "remove_profiles_from_list": b.list_relationships_body(["01A"]),
        "bulk_create_events": bulk_create_events_body(EVENTS).body,
        "bulk_import_profiles": b.bulk_profile_import_body(
            [PROFILE, {"id": "01X", "first_name": "Ann"}], list_ids=["L1"]
        ),
        "bulk_subscribe_profiles": b.subscribe_body(
            [{"email": "a@b.co", "phone_number": "+14155552671", "consented_at": "2024-01-01T00:00:00Z"}],
            list_id="L1",
            custom_source="test",
            historical_import=True,
            sms=True,
        ),
        "bulk_unsubscribe_profiles": b.unsubscribe_body(
            [{"email": "a@b.co", "phone_number": "+14155552671"}], list_id="L1", sms=True
        ),
        "create_event": b.create_event_body({**EVENTS[0], "service": "segment", "backfill": True}),
        "create_list": b.create_list_body("VIP", opt_in_process="single_opt_in"),
        "create_or_update_profile": b.profile_import_body(
            PROFILE, meta={"patch_properties": {"append": {"tags": "x"}, "unset": ["old"]}}
        ),
        "create_profile": {"data": {"type": "profile", "attributes": PROFILE}},
        "merge_profiles": b.merge_body("01DEST", "01SRC"),
        "request_profile_deletion": b.deletion_body(email="a@b.co"),
        "update_profile": {"data": {"type": "profile", "id": "01A", "attributes": {"first_name": "Ann"}}},
    }


def _set(body: Any, path: list[Any], value: Any) -> Any:
    out = copy.deepcopy(body)
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def _delete(body: Any, path: list[Any]) -> Any:
    out = copy.deepcopy(body)
    node = out
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return out


def _wrong_value(types: list[str]) -> Any:
    """A JSON value of none of ``types`` (``number`` covers ints, as in JSON Schema)."""
    candidates = [
        ("string", "text"),
        ("number", 12345),
        ("boolean", True),
        ("array", []),
        ("object", {}),
        ("null", None),
    ]
    return next(value for kind, value in candidates if kind not in types)


def _branch(instance: Any, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``oneOf`` branch an instance matches (None when it matches none)."""
    for option in schema["oneOf"]:
        if Draft202012Validator(option, format_checker=FormatChecker()).is_valid(instance):
            return option
    return None


def mutants(body: Any, schema: dict[str, Any], path: list[Any] | None = None) -> Iterator[tuple[str, Any]]:
    """(kind, mutated body) for every field of ``body`` that ``schema`` declares, recursively."""
    path = path or []
    instance: Any = body
    for step in path:
        instance = instance[step]
    if "oneOf" in schema:
        branch = _branch(instance, schema)
        if branch is not None:
            yield from mutants(body, branch, path)
        return
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if path and types:
        yield "type", _set(body, path, _wrong_value(types))
    if path and "enum" in schema:
        yield "enum", _set(body, path, "zz-not-in-enum")
    if path and "format" in schema and isinstance(instance, str):
        for bad in ("not-a-date", "2026-02-30T10:00:00Z", "2026-07-01T25:00:00Z", "2026-07-01T10:00:00+0000"):
            yield "format", _set(body, path, bad)
    if isinstance(instance, dict) and "properties" in schema:
        for key in schema.get("required", []):
            if key in instance:
                yield "required", _delete(body, [*path, key])
        if schema.get("additionalProperties") is False:
            yield "extra", _set(body, [*path, "zz_extra"], 1)
        for key, sub in schema["properties"].items():
            if key in instance:
                yield from mutants(body, sub, [*path, key])
            else:  # a declared optional field, present with a wrong type
                sub_types = sub.get("type")
                sub_types = [sub_types] if isinstance(sub_types, str) else list(sub_types or [])
                if sub_types:
                    yield "type", _set(body, [*path, key], _wrong_value(sub_types))
    if isinstance(instance, list) and isinstance(schema.get("items"), dict) and instance:
        yield from mutants(body, schema["items"], [*path, 0])


def _without_ids(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "id"} for e in errors]


@pytest.fixture(scope="module", params=REVISIONS)
def revision_ops(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, load_operations(schema_path(request.param))


def test_every_request_schema_has_a_compiled_check(revision_ops: tuple[str, dict[str, Any]]) -> None:
    _, ops = revision_ops
    with_schema = [op for op in ops.values() if op.request_schema]
    assert len(with_schema) >= 13
    for op in with_schema:
        assert fastcheck.check_for(op.request_schema) is not None, op.id
        assert fastcheck.check_for(op.request_schema) is fastcheck.check_for(op.request_schema)  # cached


@pytest.mark.parametrize("op_id", sorted(valid_bodies()))
def test_compiled_check_and_jsonschema_agree_on_mutants(op_id: str, revision_ops: tuple[str, Any]) -> None:
    revision, ops = revision_ops
    schema = ops[op_id].request_schema
    body = json.loads(json.dumps(valid_bodies()[op_id]))
    original = json.dumps(body, sort_keys=True)
    if revision == "2026-07-15":  # the builders target the pinned revision
        assert validate_body_reference(body, schema) == [] and fastcheck.accepts(body, schema) is True
    fastcheck.accepts(body, schema)
    assert json.dumps(body, sort_keys=True) == original  # schema defaults (backfill: false) are not written in
    rejected: Counter[str] = Counter()
    total = 0
    for kind, mutant in mutants(body, schema):
        total += 1
        before = json.dumps(mutant, sort_keys=True)
        reference = validate_body_reference(mutant, schema)
        assert fastcheck.accepts(mutant, schema) is (not reference), (kind, mutant, reference)
        assert _without_ids(validate_body(mutant, schema)) == _without_ids(reference)
        assert json.dumps(mutant, sort_keys=True) == before  # no defaults written into the body
        rejected[kind] += bool(reference)
    assert total >= 5 and rejected["extra"] >= 1 and rejected["required"] + rejected["type"] >= 1, rejected


def test_bulk_events_mutants_cover_every_kind() -> None:
    ops = load_operations()
    schema = ops["bulk_create_events"].request_schema
    body = json.loads(json.dumps(valid_bodies()["bulk_create_events"]))
    kinds = Counter(kind for kind, mutant in mutants(body, schema) if validate_body_reference(mutant, schema))
    assert set(kinds) == {"type", "enum", "format", "required", "extra"}, kinds


def test_rejection_errors_are_the_reference_errors() -> None:
    """Extra property in a closed object, missing required, wrong type, wrong enum, bad date: same errors."""
    schema = load_operations()["bulk_create_events"].request_schema
    body = json.loads(json.dumps(valid_bodies()["bulk_create_events"]))
    entry = ["data", "attributes", "events-bulk-create", "data", 0, "attributes"]
    event = [*entry, "events", "data", 0, "attributes"]
    cases = {
        "extra": (
            _set(body, [*entry, "profile", "data", "attributes", "traits"], {}),
            "'traits' is not a valid field for the resource 'profile'.",
            "/data/attributes/events-bulk-create/data/0/attributes/profile/data/attributes/traits",
        ),
        "required": (
            _delete(body, [*event, "metric"]),
            "'metric' is a required property",
            "/data/attributes/events-bulk-create/data/0/attributes/events/data/0/attributes/metric",
        ),
        "type": (
            _set(body, [*event, "value"], "9.5"),
            "'9.5' is not of type 'number', 'null'",
            "/data/attributes/events-bulk-create/data/0/attributes/events/data/0/attributes/value",
        ),
        "enum": (_set(body, ["data", "type"], "event-bulk-create-jobs"), None, "/data/type"),
        "format": (
            _set(body, [*event, "time"], "2026-02-30T10:00:00Z"),
            "'2026-02-30T10:00:00Z' is not a 'date-time'",
            "/data/attributes/events-bulk-create/data/0/attributes/events/data/0/attributes/time",
        ),
    }
    for kind, (mutant, detail, pointer) in cases.items():
        errors = validate_body(mutant, schema)
        assert _without_ids(errors) == _without_ids(validate_body_reference(mutant, schema)), kind
        assert len(errors) == 1 and errors[0]["source"] == {"pointer": pointer}, (kind, errors)
        assert detail is None or errors[0]["detail"] == detail, (kind, errors)
