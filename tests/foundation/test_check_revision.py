"""check-revision on the two shipped trimmed schemas (real differences) and a hand-made breaking variant."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from klaviyo_segment.cli.app import app
from klaviyo_segment.constants import schema_path
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.revision_check import check_revision, compare, flatten, trim_openapi

OLD, NEW = schema_path("2025-01-15"), schema_path("2026-07-15")
runner = CliRunner()


def _changes(base: Path, spec: Path) -> dict[str, dict[str, tuple[str, bool]]]:
    _, _, reports = check_revision(spec, base)
    return {r.operation_id: {c.path: (c.kind, c.breaking) for c in r.changes} for r in reports}


def test_real_differences_2025_to_2026() -> None:
    changes = _changes(OLD, NEW)
    assert changes["create_event"]["data.attributes.backfill"] == ("added", False)
    assert changes["create_list"]["data.attributes.opt_in_process"] == ("added", False)
    # anonymous_id can no longer be sent on profile upserts: a real breaking removal.
    assert changes["create_or_update_profile"]["data.attributes.anonymous_id"] == ("removed", True)
    sub = "data.attributes.profiles.data[].attributes.subscriptions.email.marketing"
    assert changes["bulk_subscribe_profiles"][sub] == ("required", False)  # required -> optional
    assert changes["get_events"]["query:page[size]"] == ("added", False)


def test_cli_exit_codes_on_fixtures() -> None:
    same = runner.invoke(app, ["check-revision", "--spec", str(NEW)])
    assert same.exit_code == 0, same.output
    assert "0 operation(s) changed" in same.output
    forward = runner.invoke(app, ["check-revision", "--base", str(OLD), "--spec", str(NEW)])
    assert forward.exit_code == 1  # anonymous_id removed from the profile upsert
    assert "backfill" in forward.output and "create_or_update_profile  [BREAKING]" in forward.output
    backward = runner.invoke(app, ["check-revision", "--spec", str(OLD), "--json"])
    assert backward.exit_code == 1
    lines = [json.loads(line) for line in backward.output.strip().splitlines()]
    by_op = {line["operation"]: line for line in lines[:-1]}
    assert any(
        c["path"] == "data.attributes.backfill" and c["kind"] == "removed" and c["breaking"]
        for c in by_op["create_event"]["changes"]
    )
    assert "create_event" in lines[-1]["breaking_operations"]


@pytest.fixture
def breaking_spec(tmp_path: Path) -> Path:
    """2026-07-15 with a type change, an optional->required change, a rename and a removed operation."""
    doc = json.loads(NEW.read_text())
    ops = doc["operations"]
    attrs = ops["create_event"]["request_schema"]["properties"]["data"]["properties"]["attributes"]
    attrs["properties"]["value"]["type"] = "string"
    attrs["required"] = [*attrs.get("required", []), "unique_id"]
    lst = ops["create_list"]["request_schema"]["properties"]["data"]["properties"]["attributes"]
    lst["properties"]["title"] = lst["properties"].pop("name")
    lst["required"] = ["title"]
    del ops["merge_profiles"]
    path = tmp_path / "breaking.json"
    path.write_text(json.dumps(doc))
    return path


def test_breaking_variant(breaking_spec: Path) -> None:
    changes = _changes(NEW, breaking_spec)
    assert changes["create_event"]["data.attributes.value"] == ("type", True)
    assert changes["create_event"]["data.attributes.unique_id"] == ("required", True)
    assert changes["create_list"]["data.attributes.name"] == ("renamed", True)
    assert changes["merge_profiles"][""] == ("operation", True)
    result = runner.invoke(app, ["check-revision", "--spec", str(breaking_spec)])
    assert result.exit_code == 1
    assert "renamed to data.attributes.title?" in result.output and "operation removed" in result.output


def test_widening_a_type_is_compatible() -> None:
    used = json.loads(NEW.read_text())
    other = copy.deepcopy(used)
    attrs = other["operations"]["create_event"]["request_schema"]["properties"]["data"]["properties"]["attributes"]
    attrs["properties"]["unique_id"]["type"] = ["string", "null", "integer"]
    report = {r.operation_id: r for r in compare(used, other)}["create_event"]
    assert [(c.kind, c.breaking) for c in report.changes] == [("type", False)]


def test_full_openapi_document_is_detected_and_trimmed(tmp_path: Path) -> None:
    """A tiny full spec with $ref and nullable flattens like the trimmed files."""
    spec = {
        "openapi": "3.0.2",
        "info": {"version": "2099-01-01"},
        "components": {
            "schemas": {
                "Attrs": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "note": {"type": "string", "nullable": True}},
                }
            }
        },
        "paths": {
            "/api/lists": {
                "post": {
                    "operationId": "create_list",
                    "requestBody": {
                        "content": {
                            "application/vnd.api+json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "data": {
                                            "type": "object",
                                            "properties": {"attributes": {"$ref": "#/components/schemas/Attrs"}},
                                        }
                                    },
                                }
                            }
                        }
                    },
                }
            }
        },
    }
    trimmed = trim_openapi(spec)
    fields = flatten(trimmed["operations"]["create_list"]["request_schema"])
    assert fields["data.attributes.note"].types == frozenset({"string", "null"})
    assert fields["data.attributes.name"].required
    path = tmp_path / "full.json"
    path.write_text(json.dumps(spec))
    result = runner.invoke(app, ["check-revision", "--spec", str(path)])
    assert result.exit_code == 1 and "revision 2099-01-01" in result.output


def test_unreadable_spec_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(app, ["check-revision", "--spec", str(bad)])
    # app.main() maps ConfigError to exit 2; CliRunner calls the Typer app directly, so check the error.
    assert isinstance(result.exception, ConfigError) and "--spec" in str(result.exception)
