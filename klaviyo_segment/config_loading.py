"""Loading a config file for a process that runs flows in-process (the CLI commands and ``serve``).

Why its own module: both the CLI and the ingress server need it, and the ingress must not import the CLI.
The full document (credentials included) goes to the runtime of this process only; flow parameters get the
secret-free mapping document, because Prefect stores and shows parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from klaviyo_segment.config import AppConfig, load_config


def load_process_config(path: Path | None) -> tuple[AppConfig, dict[str, Any] | None]:
    """(AppConfig, secret-free document for flow parameters). Also hands the full document (credentials
    included) to the runtime of this process, where the precedence flag > env > config > block applies."""
    from klaviyo_segment.settings import set_process_config

    if path is None:
        set_process_config(None)
        return AppConfig(), None
    config = load_config(path)
    set_process_config(
        config.model_dump(mode="python", exclude_unset=True, context={"secrets": True}) | secrets_of(config)
    )
    return config, config.mapping_document()


def secrets_of(config: AppConfig) -> dict[str, Any]:
    """The credential sections with their secret values revealed (``klaviyo``/``segment``, when set)."""
    out: dict[str, Any] = {}
    for section in ("klaviyo", "segment"):
        values = {
            k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
            for k, v in getattr(config, section).model_dump(exclude_none=True).items()
        }
        if values:
            out[section] = values
    return out
