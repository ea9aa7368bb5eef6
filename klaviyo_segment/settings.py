"""Where every credential and the state-store URL come from, with one documented precedence:

    CLI flag  >  environment variable  >  ``--config`` file  >  saved Prefect block  >  built-in default

Why this order: a flag is the most deliberate choice, the environment is how containers and CI inject
secrets, the config file describes a deployment, and a saved block is the shared account-wide setting.

The saved block is consulted last and only when needed (a required value is still missing, or the config file
names a block document explicitly), so a run fully configured by flags/env never needs a Prefect server. When it
is needed and Prefect cannot be reached, that is a :class:`ConfigError` (exit 2) saying how to fix it.

Config file shape (the parsed YAML mapping): ``klaviyo:`` and ``segment:`` sections hold the block field names
(plus optional ``block: DOCUMENT_NAME``); the store URL is ``store: {url: ...}``. ``None`` values mean "not set"
at every level.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from pydantic import ValidationError

from klaviyo_segment import constants as c
from klaviyo_segment.errors import ConfigError

if TYPE_CHECKING:
    from prefect.blocks.core import Block

    from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
    from klaviyo_segment.blocks.segment import SegmentCredentials

B = TypeVar("B", bound="Block")
#: Loads a saved block document by name; returns None when no such document exists.
BlockLoader = Callable[[type[Any], str], Any]

DEFAULT_BLOCK_NAME = "default"

#: field -> environment variable, per block type (names are promised in contracts.md).
KLAVIYO_ENV = {"api_key": c.ENV_KLAVIYO_API_KEY, "base_url": c.ENV_KLAVIYO_BASE_URL,
               "webhook_secret": c.ENV_KLAVIYO_WEBHOOK_SECRET}
SEGMENT_ENV = {"write_key": c.ENV_SEGMENT_WRITE_KEY, "base_url": c.ENV_SEGMENT_BASE_URL,
               "region": c.ENV_SEGMENT_REGION, "shared_secret": c.ENV_SEGMENT_SHARED_SECRET}
#: How a user sets each required value: named in the ConfigError.
KLAVIYO_REQUIRED = {"api_key": f"--api-key, ${c.ENV_KLAVIYO_API_KEY}, config key klaviyo.api_key "
                               "or a saved 'Klaviyo Credentials' block"}
SEGMENT_REQUIRED = {"write_key": f"--write-key, ${c.ENV_SEGMENT_WRITE_KEY}, config key segment.write_key "
                                 "or a saved 'Segment Credentials' block"}


def load_saved_block(cls: type[B], name: str) -> B | None:
    """Load a block document synchronously (also inside an event loop); None when it does not exist."""
    try:
        return cls.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        if "Unable to find" in str(exc):
            return None
        raise ConfigError(f"{cls.__name__} block {name!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any transport failure means "cannot reach Prefect"
        raise ConfigError(
            f"could not load the {cls.__name__} block {name!r} from Prefect ({type(exc).__name__}); set the "
            f"values with flags or environment variables, or point PREFECT_API_URL at a running server"
        ) from exc


def _set(value: Any) -> bool:
    return value is not None and value != ""


def _section(config: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    section = (config or {}).get(name) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"config key {name!r} must be a mapping of settings")
    return dict(section)


def _block_values(block: Any) -> dict[str, Any]:
    """Field values of a loaded block, secrets still wrapped (they are passed straight to the new block)."""
    return {name: getattr(block, name) for name in type(block).model_fields if _set(getattr(block, name, None))}


def resolve_fields(fields: list[str], *, flags: Mapping[str, Any], env: Mapping[str, str],
                   config: Mapping[str, Any], block: Callable[[], Any | None], required: Mapping[str, str],
                   force_block: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge the layers per field; returns (values, source of each value) so `doctor` can show provenance."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("flag", flags),
        ("env", {f: os.environ.get(var) for f, var in env.items()}),
        ("config", config),
    ]
    for field in fields:
        for source, layer in layers:
            if _set(layer.get(field)):
                values[field], sources[field] = layer[field], source
                break
    if force_block or any(f not in values for f in required):
        try:
            saved = block()
        except ConfigError as exc:
            missing = [f for f in required if f not in values]
            if not missing:
                raise
            raise ConfigError(f"{missing[0]} is not set: set it with {required[missing[0]]} "
                              f"(the saved block could not be used: {exc})") from exc
        if saved is not None:
            for field, value in _block_values(saved).items():
                if field in fields and field not in values:
                    values[field], sources[field] = value, "block"
    missing = [f for f in required if f not in values]
    if missing:
        field = missing[0]
        raise ConfigError(f"{field} is not set: set it with {required[field]}")
    return values, sources


def _resolve(cls: type[B], env: Mapping[str, str], required: Mapping[str, str], section: str,
             flags: Mapping[str, Any] | None, config: Mapping[str, Any] | None, block_name: str,
             loader: BlockLoader | None) -> B:
    conf = _section(config, section)
    name = conf.pop("block", None) or block_name
    fields = [f for f in cls.model_fields if not f.startswith("_")]
    # Unknown keys are the config loader's job to reject (it knows every section's full key set).
    conf = {k: v for k, v in conf.items() if k in fields}
    load = loader or load_saved_block
    values, _ = resolve_fields(
        fields, flags={k: v for k, v in (flags or {}).items() if k in fields}, env=env, config=conf,
        block=lambda: load(cls, name), required=required, force_block="block" in _section(config, section),
    )
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or section
        raise ConfigError(f"{section}.{key}: {err['msg']}") from exc


def resolve_klaviyo(flags: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                    block_name: str = DEFAULT_BLOCK_NAME, *, loader: BlockLoader | None = None
                    ) -> "KlaviyoCredentials":
    """KlaviyoCredentials from flags (block field names as keys), env, config section ``klaviyo`` and block."""
    from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials

    return _resolve(KlaviyoCredentials, KLAVIYO_ENV, KLAVIYO_REQUIRED, "klaviyo", flags, config, block_name, loader)


def resolve_segment(flags: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                    block_name: str = DEFAULT_BLOCK_NAME, *, loader: BlockLoader | None = None
                    ) -> "SegmentCredentials":
    """SegmentCredentials likewise (section ``segment``); an explicit base_url wins over region."""
    from klaviyo_segment.blocks.segment import SegmentCredentials

    return _resolve(SegmentCredentials, SEGMENT_ENV, SEGMENT_REQUIRED, "segment", flags, config, block_name, loader)


def resolve_store_url(flags: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None) -> str:
    """State-store URL: flag ``store_url`` > $KLAVIYO_SEGMENT_STORE_URL > config ``store.url`` > default
    (SQLite in $KLAVIYO_SEGMENT_HOME or ~/.klaviyo-segment). There is no block for it: it is per machine."""
    if _set((flags or {}).get("store_url")):
        return str((flags or {})["store_url"])
    if _set(os.environ.get(c.ENV_STORE_URL)):
        return os.environ[c.ENV_STORE_URL]
    store = _section(config, "store")
    if _set(store.get("url")):
        return str(store["url"])
    from klaviyo_segment.store.engine import default_url

    return default_url()
