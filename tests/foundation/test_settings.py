"""Configuration precedence: CLI flag > environment > --config file > saved block > default."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
from klaviyo_segment.blocks.segment import SegmentCredentials
from klaviyo_segment.constants import KLAVIYO_BASE_URL, KLAVIYO_REVISION, SEGMENT_REGIONS
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.settings import resolve_klaviyo, resolve_segment, resolve_store_url


class Loader:
    """Stands in for Prefect's block store and records whether it was consulted at all."""

    def __init__(self, block: Any | None) -> None:
        self.block, self.calls = block, []

    def __call__(self, cls: type, name: str) -> Any | None:
        self.calls.append((cls.__name__, name))
        return self.block


def _saved() -> KlaviyoCredentials:
    return KlaviyoCredentials(api_key=SecretStr("pk_block"), base_url="http://block", timeout_seconds=9)


def test_each_layer_wins_over_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"klaviyo": {"api_key": "pk_config", "base_url": "http://config", "timeout_seconds": 5}}
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_env")
    monkeypatch.setenv("KLAVIYO_BASE_URL", "http://env")
    loader = Loader(_saved())
    creds = resolve_klaviyo({"api_key": "pk_flag", "revision": None}, config, loader=loader)
    assert creds.api_key.get_secret_value() == "pk_flag"  # flag > env
    assert creds.base_url == "http://env"  # env > config
    assert creds.timeout_seconds == 5  # config > block
    assert creds.revision == KLAVIYO_REVISION  # default (None flag means unset)
    assert loader.calls == []  # everything required was known: Prefect was never asked

    monkeypatch.delenv("KLAVIYO_API_KEY")
    monkeypatch.delenv("KLAVIYO_BASE_URL")
    creds = resolve_klaviyo({}, {"klaviyo": {"timeout_seconds": 5}}, block_name="acct2", loader=loader)
    assert creds.api_key.get_secret_value() == "pk_block" and creds.base_url == "http://block"  # block > default
    assert creds.timeout_seconds == 5 and loader.calls == [("KlaviyoCredentials", "acct2")]


def test_config_can_name_the_block_document() -> None:
    loader = Loader(_saved())
    creds = resolve_klaviyo({"api_key": "pk_flag"}, {"klaviyo": {"block": "eu-account"}}, loader=loader)
    assert loader.calls == [("KlaviyoCredentials", "eu-account")]
    assert creds.api_key.get_secret_value() == "pk_flag" and creds.timeout_seconds == 9


def test_missing_required_value_names_key_and_fix() -> None:
    with pytest.raises(ConfigError, match=r"api_key is not set: .*KLAVIYO_API_KEY"):
        resolve_klaviyo({}, None, loader=Loader(None))
    with pytest.raises(ConfigError, match=r"write_key is not set: .*SEGMENT_WRITE_KEY"):
        resolve_segment({}, {}, loader=Loader(None))


def test_invalid_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="klaviyo.api_key"):
        resolve_klaviyo({"api_key": "not-a-private-key"}, loader=Loader(None))
    with pytest.raises(ConfigError, match="segment.region"):
        resolve_segment({"write_key": "w", "region": "apac"}, loader=Loader(None))


def test_segment_env_base_url_wins_over_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "wk")
    monkeypatch.setenv("SEGMENT_REGION", "eu")
    monkeypatch.setenv("SEGMENT_SHARED_SECRET", "shh")
    creds = resolve_segment(loader=Loader(None))
    assert creds.resolved_base_url == SEGMENT_REGIONS["eu"] and creds.shared_secret.get_secret_value() == "shh"
    monkeypatch.setenv("SEGMENT_BASE_URL", "http://127.0.0.1:5555")
    assert resolve_segment(loader=Loader(None)).resolved_base_url == "http://127.0.0.1:5555"


def test_store_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("KLAVIYO_SEGMENT_HOME", str(tmp_path))
    assert resolve_store_url() == f"sqlite:///{tmp_path / 'state.db'}"
    config = {"store": {"url": "sqlite:///config.db"}}
    assert resolve_store_url({}, config) == "sqlite:///config.db"
    monkeypatch.setenv("KLAVIYO_SEGMENT_STORE_URL", "sqlite:///env.db")
    assert resolve_store_url({}, config) == "sqlite:///env.db"
    assert resolve_store_url({"store_url": "sqlite:///flag.db"}, config) == "sqlite:///flag.db"


def test_unreachable_prefect_is_a_config_error() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with pytest.raises(
            ConfigError, match="write_key is not set: .*could not load the SegmentCredentials block 'default'"
        ):
            resolve_segment({})
        with pytest.raises(ConfigError, match="could not load the SegmentCredentials block 'named'"):
            resolve_segment({"write_key": "w"}, {"segment": {"block": "named"}})


@pytest.mark.prefect
def test_saved_block_loads_from_a_real_prefect_server(prefect_server: str) -> None:
    SegmentCredentials(write_key=SecretStr("wk_saved"), region="eu").save("foundation-test", overwrite=True)
    creds = resolve_segment({}, {"segment": {"block": "foundation-test"}})
    assert creds.write_key.get_secret_value() == "wk_saved" and creds.region == "eu"
    assert resolve_klaviyo({"api_key": "pk_x"}).base_url == KLAVIYO_BASE_URL
    with pytest.raises(ConfigError, match="write_key is not set"):
        resolve_segment({}, block_name="no-such-document")
