"""Config file: the documented keys load as written, unknown keys and bad values name the key, flows' requirements."""

from __future__ import annotations

from pathlib import Path

import pytest

from klaviyo_segment.config import AppConfig, load_config
from klaviyo_segment.errors import ConfigError

EXAMPLE = """\
templates: {identify: [identify-default], track: [ecommerce, track-default]}
track: {allow: ["*"], deny: []}
audiences: {high_value_users: "LIST_ID"}          # Segment audience_key -> Klaviyo list id
onboarding: {events: ["Signed Up", "Account Created"], list_id: "LIST_ID"}
churn: {audience_key: "churn_risk_users", trait: "churn_risk_score", threshold: 0.7, list_id: "LIST_ID"}
phone_default_country: US
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_documented_example_loads_and_compiles(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, EXAMPLE))
    compiled = config.compiled()
    assert compiled is config.compiled()  # cached
    assert compiled.identify.names == ["identify-default"]
    assert compiled.track.names == ["ecommerce", "track-default"]
    assert config.audiences == {"high_value_users": "LIST_ID"}
    assert (config.churn.threshold, config.onboarding.max_age_days, config.max_event_age_hours) == (0.7, 7, 24)
    for flow in ("onboard-new-users", "churn-winback", "sync-identify"):
        config.require(flow)


def test_custom_templates_secrets_and_defaults(tmp_path: Path) -> None:
    text = """\
custom_templates:
  signups:
    kind: track
    match: {events: ["Signed Up"]}
    fields: {metric: {literal: "Created Account"}, profile.external_id: $.userId}
templates: {track: [signups, track-default]}
track: {deny: ["Internal *"], where: [{property: test, exists: false}]}
klaviyo: {api_key: pk_secret_value, base_url: "http://127.0.0.1:1"}
segment: {write_key: wk_secret, region: eu}
page_screen: {enabled: true}
engagement: {lookback_minutes: 5}
store: {url: "sqlite:///state.db"}
"""
    config = load_config(_write(tmp_path, text))
    compiled = config.compiled()
    assert compiled.track.map({"type": "track", "event": "Signed Up", "userId": "u"})[0].metric == "Created Account"  # type: ignore[index, union-attr]
    assert compiled.track_filter.check({"event": "Internal Ping"}) == "filtered: event in deny list"
    assert "pk_secret_value" not in repr(config) and "wk_secret" not in repr(config)
    document = config.mapping_document()
    assert "api_key" not in document["klaviyo"] and "write_key" not in document["segment"]
    assert document["klaviyo"]["base_url"] == "http://127.0.0.1:1"
    assert AppConfig.from_document(document).compiled().track.names == ["signups", "track-default"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("track: {alow: ['*']}\n", "track.alow: unknown key"),
        ("templtes: {}\n", "templtes: unknown key"),
        ("onboarding: {list_id: L, max_age: 3}\n", "onboarding.max_age: unknown key"),
        ("klaviyo: {token: x}\n", "klaviyo.token: unknown key"),
        ("segment: {region: mars}\n", "segment.region: Input should be 'us' or 'eu'"),
        ("churn: {threshold: high}\n", "churn.threshold:"),
        ("phone_default_country: XX\n", "phone_default_country: Value error, unknown country 'XX'"),
        ("templates: {track: [nope]}\n", "templates.track[0]: unknown template 'nope'"),
        ("templates: {identify: [track-default]}\n", "templates.identify[0]: template 'track-default' is a track"),
        (
            "custom_templates: {bad: {kind: track, fields: {metric: $.event, value: {literal: x}}}}\n"
            "templates: {track: [bad]}\n",
            "template 'bad', field 'value': type mismatch",
        ),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("track: [unclosed\n", "is not valid YAML"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert expected in str(info.value)


def test_unreadable_file_and_flow_requirements(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    config = load_config(_write(tmp_path, "audiences: {}\n"))
    with pytest.raises(ConfigError, match="'onboard-new-users' needs config key 'onboarding.list_id'"):
        config.require("onboard-new-users")
    with pytest.raises(ConfigError, match="'churn-winback' needs config key 'churn.list_id'"):
        config.require("churn-winback")
    assert load_config(_write(tmp_path, "")).compiled().identify.names == ["identify-default"]
