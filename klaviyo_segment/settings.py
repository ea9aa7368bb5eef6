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

Environment variables are read in one place, :class:`EnvSettings` (pydantic-settings), when a value is asked
for (:func:`env_settings`), never frozen at import: tests, the chaos workers and long-lived processes may change
them. Secrets are ``SecretStr`` so a settings object printed in a log or traceback shows ``**********``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


def _env(name: str) -> Any:
    """The field is read from exactly this variable (no prefix, no alternative spellings)."""
    return Field(default=None, validation_alias=AliasChoices(name))


class EnvSettings(BaseSettings):
    """Every environment variable this project reads (the names are a public contract: README, CLI help).

    Empty values count as unset, like every other layer of the precedence. Flags ("=1") keep their documented
    spelling: only ``1`` turns them on.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", populate_by_name=False)

    klaviyo_api_key: SecretStr | None = _env(c.ENV_KLAVIYO_API_KEY)
    klaviyo_base_url: str | None = _env(c.ENV_KLAVIYO_BASE_URL)
    klaviyo_webhook_secret: SecretStr | None = _env(c.ENV_KLAVIYO_WEBHOOK_SECRET)
    segment_write_key: SecretStr | None = _env(c.ENV_SEGMENT_WRITE_KEY)
    segment_base_url: str | None = _env(c.ENV_SEGMENT_BASE_URL)
    segment_region: str | None = _env(c.ENV_SEGMENT_REGION)
    segment_shared_secret: SecretStr | None = _env(c.ENV_SEGMENT_SHARED_SECRET)
    segment_webhook_token: SecretStr | None = _env(c.ENV_SEGMENT_WEBHOOK_TOKEN)
    #: State-store SQLAlchemy URL; unset means SQLite in ``home``.
    store_url: str | None = _env(c.ENV_STORE_URL)
    #: Where the default store and the local Prefect server live (default ~/.klaviyo-segment).
    home: Path | None = _env(c.ENV_HOME)
    #: Receiver accepts unsigned requests (local development only).
    insecure_dev: bool = Field(default=False, validation_alias=AliasChoices(c.ENV_INSECURE_DEV))
    #: Batch lease; an expired lease lets another worker take the batch over.
    lease_seconds: float = Field(default=600.0, gt=0, validation_alias=AliasChoices(c.ENV_LEASE_SECONDS))
    #: ``prefect`` = cross-worker pacing through Prefect global concurrency limits; else in-process.
    global_limits: str = Field(default="", validation_alias=AliasChoices(c.ENV_GLOBAL_LIMITS))
    #: Multiplier of the documented rate limits (for sandboxes run with scaled limits).
    rate_scale: float = Field(default=1.0, gt=0, allow_inf_nan=False, validation_alias=AliasChoices(c.ENV_RATE_SCALE))
    #: Logs show emails and phone numbers unmasked (debugging only).
    log_pii: bool = Field(default=False, validation_alias=AliasChoices(c.ENV_LOG_PII))

    @field_validator("insecure_dev", "log_pii", mode="before")
    @classmethod
    def _only_one_means_on(cls, value: Any) -> bool:
        return value is True or str(value).strip() == "1"

    @field_validator("global_limits", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> str:
        return str(value).strip().lower()

    @property
    def home_dir(self) -> Path:
        return self.home or Path.home() / ".klaviyo-segment"


def env_settings() -> EnvSettings:
    """The environment as it is now; a malformed value is a :class:`ConfigError` naming the variable (exit 2)."""
    try:
        return EnvSettings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{name}={err.get('input')!r}: {err['msg']}") from None


#: block field -> (EnvSettings attribute, environment variable), per block type (README "Configuration").
KLAVIYO_ENV = {
    "api_key": ("klaviyo_api_key", c.ENV_KLAVIYO_API_KEY),
    "base_url": ("klaviyo_base_url", c.ENV_KLAVIYO_BASE_URL),
    "webhook_secret": ("klaviyo_webhook_secret", c.ENV_KLAVIYO_WEBHOOK_SECRET),
}
SEGMENT_ENV = {
    "write_key": ("segment_write_key", c.ENV_SEGMENT_WRITE_KEY),
    "base_url": ("segment_base_url", c.ENV_SEGMENT_BASE_URL),
    "region": ("segment_region", c.ENV_SEGMENT_REGION),
    "shared_secret": ("segment_shared_secret", c.ENV_SEGMENT_SHARED_SECRET),
}


class ProcessConfig:
    """The full config document (credentials included) of this process, set by the CLI for in-process runs.

    Credentials must never travel as flow parameters (Prefect stores and shows those), so the CLI hands the
    document over here and the runtime reads it with :func:`get_process_config`. One value per process, shared
    by the threads Prefect runs flows on (a contextvar would not reach them).
    """

    _lock = threading.Lock()
    _document: dict[str, Any] | None = None

    @classmethod
    def set(cls, document: dict[str, Any] | None) -> None:
        with cls._lock:
            cls._document = document

    @classmethod
    def get(cls) -> dict[str, Any] | None:
        with cls._lock:
            return cls._document


def set_process_config(document: dict[str, Any] | None) -> None:
    """Hand this process' config document (with credentials) to every later resolve; None clears it."""
    ProcessConfig.set(document)


def get_process_config() -> dict[str, Any] | None:
    return ProcessConfig.get()


def credentials_document(config: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """The document credentials are resolved from: the process' (CLI ``--config``) else ``config``."""
    return ProcessConfig.get() or config or {}


#: How a user sets each required value: named in the ConfigError.
KLAVIYO_REQUIRED = {
    "api_key": f"--api-key, ${c.ENV_KLAVIYO_API_KEY}, config key klaviyo.api_key or a saved 'Klaviyo Credentials' block"
}
SEGMENT_REQUIRED = {
    "write_key": f"--write-key, ${c.ENV_SEGMENT_WRITE_KEY}, config key segment.write_key "
    "or a saved 'Segment Credentials' block"
}


def load_saved_block(cls: type[B], name: str) -> B | None:
    """Load a block document synchronously (also inside an event loop); None when it does not exist."""
    try:
        return cls.load(name, _sync=True)  # type: ignore[call-arg,return-value]
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        if "Unable to find" in str(exc):
            return None
        raise ConfigError(f"{cls.__name__} block {name!r}: {exc}") from exc
    except RuntimeError as exc:
        if isinstance(exc.__cause__, ValidationError):  # saved (e.g. in the UI) but invalid: name the key
            raise ConfigError(f"{block_label(cls)} block {name!r}: {validation_reason(exc.__cause__)}") from None
        raise ConfigError(
            f"could not load the {cls.__name__} block {name!r} from Prefect ({type(exc).__name__}); set the "
            f"values with flags or environment variables, or point PREFECT_API_URL at a running server"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any transport failure means "cannot reach Prefect"
        raise ConfigError(
            f"could not load the {cls.__name__} block {name!r} from Prefect ({type(exc).__name__}); set the "
            f"values with flags or environment variables, or point PREFECT_API_URL at a running server"
        ) from exc


def block_label(cls: type[Any]) -> str:
    """ "mapping tables" for MappingTables: how error messages name a block type."""
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()


def validation_reason(exc: ValidationError) -> str:
    """The first error as ``dotted.key: reason``; a validator's own message (already naming its key) as is."""
    err = exc.errors()[0]
    if err["type"] == "value_error":
        return str(err.get("ctx", {}).get("error") or err["msg"])
    key = ".".join(str(p) for p in err["loc"])
    reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    return f"{key}: {reason}" if key else reason


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


def resolve_fields(
    fields: list[str],
    *,
    flags: Mapping[str, Any],
    env: Mapping[str, Any],
    config: Mapping[str, Any],
    block: Callable[[], Any | None],
    required: Mapping[str, str],
    force_block: bool,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge the layers per field; returns (values, source of each value) so `doctor` can show provenance.
    ``env`` holds the environment's value per field (see :func:`env_layer`)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("flag", flags),
        ("env", env),
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
            raise ConfigError(
                f"{missing[0]} is not set: set it with {required[missing[0]]} "
                f"(the saved block could not be used: {exc})"
            ) from exc
        if saved is not None:
            for field, value in _block_values(saved).items():
                if field in fields and field not in values:
                    values[field], sources[field] = value, "block"
    missing = [f for f in required if f not in values]
    if missing:
        field = missing[0]
        raise ConfigError(f"{field} is not set: set it with {required[field]}")
    return values, sources


def env_layer(mapping: Mapping[str, tuple[str, str]], settings: EnvSettings | None = None) -> dict[str, Any]:
    """Block field -> value from the environment (secrets stay ``SecretStr``; blocks accept them as such)."""
    current = settings or env_settings()
    return {field: getattr(current, attr) for field, (attr, _var) in mapping.items()}


def _resolve(
    cls: type[B],
    env: Mapping[str, Any],
    required: Mapping[str, str],
    section: str,
    flags: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    block_name: str,
    loader: BlockLoader | None,
) -> B:
    conf = _section(config, section)
    name = conf.pop("block", None) or block_name
    fields = [f for f in cls.model_fields if not f.startswith("_")]
    # Unknown keys are the config loader's job to reject (it knows every section's full key set).
    conf = {k: v for k, v in conf.items() if k in fields}
    load = loader or load_saved_block
    values, _ = resolve_fields(
        fields,
        flags={k: v for k, v in (flags or {}).items() if k in fields},
        env=env,
        config=conf,
        block=lambda: load(cls, name),
        required=required,
        force_block="block" in _section(config, section),
    )
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or section
        raise ConfigError(f"{section}.{key}: {err['msg']}") from exc


def resolve_klaviyo(
    flags: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    block_name: str = DEFAULT_BLOCK_NAME,
    *,
    loader: BlockLoader | None = None,
) -> KlaviyoCredentials:
    """KlaviyoCredentials from flags (block field names as keys), env, config section ``klaviyo`` and block."""
    from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials

    return _resolve(
        KlaviyoCredentials, env_layer(KLAVIYO_ENV), KLAVIYO_REQUIRED, "klaviyo", flags, config, block_name, loader
    )


def resolve_segment(
    flags: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    block_name: str = DEFAULT_BLOCK_NAME,
    *,
    loader: BlockLoader | None = None,
) -> SegmentCredentials:
    """SegmentCredentials likewise (section ``segment``); an explicit base_url wins over region."""
    from klaviyo_segment.blocks.segment import SegmentCredentials

    return _resolve(
        SegmentCredentials, env_layer(SEGMENT_ENV), SEGMENT_REQUIRED, "segment", flags, config, block_name, loader
    )


def resolve_store_url(
    flags: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    loader: BlockLoader | None = None,
    block_name: str = DEFAULT_BLOCK_NAME,
) -> str:
    """State-store URL: flag ``store_url`` > $KLAVIYO_SEGMENT_STORE_URL > config ``store.url`` > the saved
    'Klaviyo Segment State Store' block (document ``default``) > SQLite in $KLAVIYO_SEGMENT_HOME.

    The block is what makes every worker of a work pool use one database: a worker without the variable would
    otherwise write its own SQLite file and de-duplication would not span workers. It is looked up only when a
    Prefect API is in reach (``PREFECT_API_URL`` set, or inside a flow run) or ``loader`` is given, so commands
    that need no Prefect stay fast; when the lookup fails that is a ConfigError (the default would split state)."""
    url = _configured_store_url(flags, config)
    if url is None:
        block = _saved_store_block(loader, block_name)
        url = block.url.get_secret_value() if block is not None and block.url is not None else None
    url = url or default_store_url()
    warn_if_local_store_on_pool(url)
    return url


def _configured_store_url(flags: Mapping[str, Any] | None, config: Mapping[str, Any] | None) -> str | None:
    if _set((flags or {}).get("store_url")):
        return str((flags or {})["store_url"])
    env = env_settings()
    if _set(env.store_url):
        return str(env.store_url)
    store = _section(config, "store")
    return str(store["url"]) if _set(store.get("url")) else None


def _prefect_in_reach() -> bool:
    """A Prefect API is configured or this is a flow run; never imports Prefect just to find out."""
    import os
    import sys

    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value()) or FlowRunContext.get() is not None


def _saved_store_block(loader: BlockLoader | None, name: str) -> Any | None:
    if loader is None and not _prefect_in_reach():
        return None
    from klaviyo_segment.blocks.store import StateStore

    try:
        return (loader or load_saved_block)(StateStore, name)
    except ConfigError as exc:
        raise ConfigError(f"state store: {exc} (or set ${c.ENV_STORE_URL} / config key store.url)") from exc


def warn_if_local_store_on_pool(url: str) -> bool:
    """Say loudly (in the run's logs) when a deployment run from a work pool uses a local SQLite file: the
    pool's other workers have their own files, so de-duplication, leases and dead letters do not span them."""
    import logging
    import sys

    if not url.startswith("sqlite") or "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    pool = getattr(getattr(ctx, "flow_run", None), "work_pool_name", None) if ctx else None
    if not pool:
        return False
    message = (
        f"the state store is a local SQLite file ({url}) while this worker runs deployment runs from work "
        f"pool {pool!r}: de-duplication, batch leases and dead letters do not span workers. Save the "
        f"'Klaviyo Segment State Store' block (document {DEFAULT_BLOCK_NAME!r}) with a PostgreSQL URL, or "
        f"set ${c.ENV_STORE_URL} on every worker"
    )
    # klaviyo_segment.* records reach the flow run's logs (run_logs.route_to_prefect) and the worker's console
    logging.getLogger("klaviyo_segment.settings").warning("%s", message)
    return True


def default_store_url(settings: EnvSettings | None = None) -> str:
    """Where the store lives when nothing is configured: the env var, else the embedded SQLite file in home."""
    current = settings or env_settings()
    if _set(current.store_url):
        return str(current.store_url)
    return f"sqlite:///{current.home_dir / 'state.db'}"
