"""The flow registry (``klaviyo_segment.flows``) is the one list of flows: prefect.yaml, routing, required config
keys and the CLI must agree with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from klaviyo_segment import flows as registry
from klaviyo_segment.config import AppConfig
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.flowspec import FlowSpec
from klaviyo_segment.routing import flows_for

ROOT = Path(__file__).resolve().parents[2]
#: Deployments that are a second deployment of a registered flow (same entrypoint, other parameters).
VARIANTS = {"engagement-to-segment-poll": "engagement-to-segment"}


def _deployments() -> list[dict[str, Any]]:
    document = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return list(document["deployments"])


def test_names_are_unique_and_match_the_specs() -> None:
    every = registry.names(auxiliary=True)
    assert len(set(every)) == len(every) == len(registry.EVENT_FLOWS) + len(registry.AUXILIARY_FLOWS)
    assert registry.names() == every[: len(registry.EVENT_FLOWS)]
    specs = registry.all_specs(auxiliary=True)
    assert [s.name for s in specs] == list(every)
    assert all(isinstance(s, FlowSpec) and s.flow.name == s.name for s in specs)
    assert [s.is_event_flow for s in specs] == [n in registry.names() for n in every]
    import klaviyo_segment.constants as constants

    assert not hasattr(constants, "FLOW_NAMES"), "flow names live in the registry only (no upward import)"


def test_every_registered_flow_has_its_deployment_and_every_deployment_a_registered_flow() -> None:
    deployments = _deployments()
    by_name = {d["name"]: d for d in deployments}
    assert len(by_name) == len(deployments), "deployment names must be unique"
    for spec in registry.all_specs(auxiliary=True):
        deployment = by_name.get(spec.name)
        assert deployment is not None, f"prefect.yaml has no deployment named {spec.name!r}"
        module = spec.name.replace("-", "_")
        assert deployment["entrypoint"] == f"flows/{module}.py:{spec.entrypoint_function}"
        triggers = deployment.get("triggers") or []
        expects = {e for t in triggers if t.get("type") == "event" for e in t.get("expect", [])}
        if spec.is_event_flow and spec.routes is not None:
            # Segment flows start only on their own batch-ready event (from ingest-segment), with batch ids:
            # the same parameters the receiver's deployments launcher passes; never messages.
            assert [t["match"] for t in triggers] == [{"prefect.resource.id": f"klaviyo-segment.flow.{spec.name}"}]
            assert expects == {"klaviyo-segment.batch.ready"}, (spec.name, expects)
            assert [t["parameters"] for t in triggers] == [{"batch_ids": "{{ event.payload.batch_ids }}"}]
        elif spec.is_event_flow:
            assert expects and all(e.startswith("klaviyo.") for e in expects), (spec.name, expects)
        elif spec.name == "ingest-segment":  # the webhook's event: only its id is a parameter
            assert expects == {"segment.*"}
            assert [t["parameters"] for t in triggers] == [{"event_id": "{{ event.id | string }}"}]
        else:
            assert not triggers, f"auxiliary flow {spec.name} is started by hand, not by events"
        if "schedules" not in deployment or deployment.get("parameters", {}).get("poll"):
            continue
        assert deployment["schedules"] == [], f"{spec.name}: declare schedules: [] (interactive deploy asks)"
    assert all("schedules" in d for d in deployments), "every deployment declares its schedules"
    for deployment in deployments:
        flow_name = VARIANTS.get(deployment["name"], deployment["name"])
        spec = registry.get_spec(flow_name, auxiliary=True)  # ConfigError = a deployment of no registered flow
        module = spec.name.replace("-", "_")
        assert deployment["entrypoint"] == f"flows/{module}.py:{spec.entrypoint_function}", deployment["name"]


AUDIENCE_ID = {
    "type": "identify",
    "userId": "u1",
    "traits": {"churn_risk_users": True},
    "context": {"personas": {"computation_class": "audience", "computation_key": "churn_risk_users"}},
}
SAMPLES: list[tuple[dict[str, Any], list[str]]] = [
    ({"type": "identify", "userId": "u1", "traits": {"email": "a@example.com"}}, ["sync-identify"]),
    ({"type": "identify", "userId": "u1", "traits": {"vip": True}}, ["sync-identify", "sync-audiences"]),
    ({"type": "identify", "userId": "u1", "traits": {"churn_risk_score": 0.9}}, ["sync-identify", "churn-winback"]),
    (AUDIENCE_ID, ["sync-identify", "sync-audiences", "churn-winback"]),
    ({"type": "track", "event": "Signed Up"}, ["forward-track", "onboard-new-users"]),
    ({"type": "track", "event": "Order Completed"}, ["forward-track"]),
    ({"type": "track", "event": "Audience Entered", "properties": {"audience_key": "vip"}}, ["sync-audiences"]),
    (
        {"type": "track", "event": "Audience Exited", "properties": {"audience_key": "churn_risk_users"}},
        ["sync-audiences", "churn-winback"],
    ),
    ({"type": "page", "name": "Home"}, ["forward-track"]),
    ({"type": "screen", "name": "Home"}, ["forward-track"]),
    ({"type": "alias", "userId": "u1", "previousId": "a1"}, ["sync-identify"]),
    ({"type": "delete", "userId": "u1"}, ["sync-identify"]),
    ({"type": "group", "userId": "u1", "groupId": "g"}, ["sync-identify"]),
    ({"type": "unknown"}, []),
]


@pytest.mark.parametrize(("msg", "expected"), SAMPLES, ids=[f"{m['type']}-{i}" for i, (m, _) in enumerate(SAMPLES)])
def test_each_specs_routes_is_its_part_of_flows_for(msg: dict[str, Any], expected: list[str]) -> None:
    config = AppConfig(audiences={"vip": "LIST_VIP"})
    assert flows_for(msg, config) == expected
    chosen = [s.name for s in registry.all_specs() if s.routes is not None and s.routes(msg, config)]
    assert chosen == expected


def test_klaviyo_deliveries_go_to_the_registered_flow_that_no_segment_message_reaches() -> None:
    from klaviyo_segment.ingress.receiver import ENGAGEMENT_FLOW

    spec = registry.get_spec(ENGAGEMENT_FLOW)
    assert spec.routes is None and spec.load_items is not None and spec.sends_to_segment


def test_required_keys_come_from_the_specs() -> None:
    needing = {s.name: s.required_config_keys for s in registry.all_specs() if s.required_config_keys}
    assert needing == {"onboard-new-users": ("onboarding.list_id",), "churn-winback": ("churn.list_id",)}
    for name, keys in needing.items():
        with pytest.raises(ConfigError, match=f"{name!r} needs config key {keys[0]!r}"):
            AppConfig().require(name)
    AppConfig().require("not-a-flow")  # not a registered flow: nothing to require


def test_unknown_flow_lists_the_known_ones_and_auxiliary_flows_are_not_runnable() -> None:
    with pytest.raises(ConfigError, match="unknown flow 'nope'; known flows: sync-identify, forward-track"):
        registry.get_spec("nope")
    with pytest.raises(ConfigError, match="unknown flow 'replay-dead-letters'"):
        registry.get_spec("replay-dead-letters")
    assert registry.get_spec("replay-dead-letters", auxiliary=True).process is None


def test_spec_rejects_a_flow_named_differently_and_an_auxiliary_flow_with_routes() -> None:
    spec = registry.get_spec("sync-identify")
    with pytest.raises(ValueError, match="named 'sync-identify'"):
        FlowSpec(name="other", flow=spec.flow, process=spec.process)
    with pytest.raises(ValueError, match="need a process"):
        FlowSpec(name="sync-identify", flow=spec.flow, routes=spec.routes)
    with pytest.raises(ValueError, match="section.field"):
        FlowSpec(name="sync-identify", flow=spec.flow, process=spec.process, required_config_keys=("list_id",))


def test_cli_help_lists_the_registry_without_importing_prefect_and_unknown_flow_exits_2() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom klaviyo_segment.cli.app import app\n"
        "out = CliRunner().invoke(app, ['run', '--help']).output\n"
        "print(' '.join(out.split()))\nprint('prefect loaded:', 'prefect' in sys.modules)\n"
    )
    wide = {**os.environ, "COLUMNS": "400", "TERMINAL_WIDTH": "400"}  # rich wraps the help in boxes otherwise
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=wide)
    assert done.returncode == 0, done.stderr
    assert f"Flow name: {', '.join(registry.names())}." in done.stdout
    assert "prefect loaded: False" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "klaviyo_segment.cli.app", "preview", "nope", "--input", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert bad.returncode == 2
    assert f"known flows: {', '.join(registry.names())}" in bad.stderr
