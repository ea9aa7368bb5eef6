"""EnvSettings: every environment variable read in one place, when asked (never frozen at import), secrets
masked, malformed values a ConfigError naming the variable; the process config holder; the lease read at lease
time."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from klaviyo_segment import constants as c
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.settings import (
    EnvSettings,
    credentials_document,
    env_settings,
    get_process_config,
    resolve_klaviyo,
    set_process_config,
)

ALL_VARS = [
    c.ENV_KLAVIYO_API_KEY,
    c.ENV_KLAVIYO_BASE_URL,
    c.ENV_KLAVIYO_WEBHOOK_SECRET,
    c.ENV_SEGMENT_WRITE_KEY,
    c.ENV_SEGMENT_BASE_URL,
    c.ENV_SEGMENT_REGION,
    c.ENV_SEGMENT_SHARED_SECRET,
    c.ENV_SEGMENT_WEBHOOK_TOKEN,
    c.ENV_STORE_URL,
    c.ENV_HOME,
    c.ENV_INSECURE_DEV,
    c.ENV_LEASE_SECONDS,
    c.ENV_GLOBAL_LIMITS,
    c.ENV_RATE_SCALE,
    c.ENV_LOG_PII,
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)


def test_every_documented_variable_is_covered_with_defaults() -> None:
    covered = {alias for f in EnvSettings.model_fields.values() for alias in f.validation_alias.choices}
    assert covered == set(ALL_VARS)
    env = env_settings()
    assert (env.lease_seconds, env.rate_scale, env.global_limits, env.insecure_dev, env.log_pii) == (
        600.0,
        1.0,
        "",
        False,
        False,
    )
    assert env.klaviyo_api_key is None and env.store_url is None


def test_values_are_read_when_asked_and_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_KLAVIYO_API_KEY, "pk_one")
    monkeypatch.setenv(c.ENV_SEGMENT_WEBHOOK_TOKEN, "tok")
    first = env_settings()
    monkeypatch.setenv(c.ENV_KLAVIYO_API_KEY, "pk_two")
    assert isinstance(first.klaviyo_api_key, SecretStr) and "pk_one" not in repr(first)
    assert env_settings().klaviyo_api_key.get_secret_value() == "pk_two"  # type: ignore[union-attr]
    assert first.segment_webhook_token.get_secret_value() == "tok"  # type: ignore[union-attr]
    monkeypatch.setenv(c.ENV_KLAVIYO_BASE_URL, "")  # empty is unset, as in every layer
    assert env_settings().klaviyo_base_url is None


@pytest.mark.parametrize(("raw", "on"), [("1", True), ("0", False), ("true", False), ("", False)])
def test_flags_only_turn_on_with_1(monkeypatch: pytest.MonkeyPatch, raw: str, on: bool) -> None:
    monkeypatch.setenv(c.ENV_INSECURE_DEV, raw)
    monkeypatch.setenv(c.ENV_LOG_PII, raw)
    assert env_settings().insecure_dev is on and env_settings().log_pii is on


@pytest.mark.parametrize(
    ("name", "raw"),
    [(c.ENV_RATE_SCALE, "fast"), (c.ENV_RATE_SCALE, "0"), (c.ENV_RATE_SCALE, "inf"), (c.ENV_LEASE_SECONDS, "-5")],
)
def test_malformed_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, raw: str) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigError, match=name):
        env_settings()


def test_redaction_survives_an_unrelated_malformed_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from klaviyo_segment.redact import redact

    monkeypatch.setenv(c.ENV_RATE_SCALE, "fast")
    assert redact("ada@example.com") == "a***@example.com"
    monkeypatch.delenv(c.ENV_RATE_SCALE)
    monkeypatch.setenv(c.ENV_LOG_PII, "1")
    assert redact("ada@example.com") == "ada@example.com"


def test_process_config_is_an_explicit_holder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_KLAVIYO_API_KEY, "pk_env")
    document = {"klaviyo": {"api_key": "pk_cli", "base_url": "http://cli"}}
    try:
        set_process_config(document)
        assert get_process_config() is document and credentials_document({"other": 1}) is document
        creds = resolve_klaviyo(config=credentials_document())
        assert creds.api_key.get_secret_value() == "pk_env" and creds.base_url == "http://cli"  # env > config
    finally:
        set_process_config(None)
    assert credentials_document({"x": 1}) == {"x": 1} and credentials_document() == {}


async def test_lease_is_read_at_lease_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chaos workers shorten the lease through the variable after import; the store must see it."""
    from klaviyo_segment import runtime
    from klaviyo_segment.config import AppConfig

    seen: list[float] = []

    class Recording:
        async def lease(self, ids: list[str], owner: str, seconds: float) -> list[object]:
            seen.append(seconds)
            return []

        async def take_over_staged(self, ids: list[str], owner: str, seconds: float) -> list[object]:
            seen.append(seconds)
            return []

        async def retake_own(self, ids: list[str], owner: str, seconds: float) -> list[object]:
            seen.append(seconds)
            return []

    env = runtime.FlowEnv(flow="sync-identify", config=AppConfig(), store=Recording(), klaviyo=None)
    await runtime.load_inputs(env, None, ["b1"])
    monkeypatch.setenv(c.ENV_LEASE_SECONDS, "30")
    await runtime.load_inputs(env, None, ["b1"])
    assert seen == [600.0] * 3 + [30.0] * 3  # lease, take over what `run` staged, retake a Failed run's own
