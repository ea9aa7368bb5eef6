"""Run the Klaviyo and Segment emulators together on 127.0.0.1 (CLI, tests, demo, users' dry runs).

Credentials are derived from the seed so a rerun with the same seed prints the same keys: scripts and docs
can hard-code them for a local sandbox without ever touching real secrets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from klaviyo_segment.devkit.sandbox.klaviyo.app import KlaviyoSandboxConfig, create_app
from klaviyo_segment.devkit.sandbox.segment.app import create_app as create_segment_app
from klaviyo_segment.devkit.sandbox.segment.serve import serve_in_thread
from klaviyo_segment.errors import ConfigError


@dataclass
class SandboxOptions:
    host: str = "127.0.0.1"
    port_klaviyo: int = 0
    port_segment: int = 0
    rate_limits: str = "on"
    faults: str | None = None
    strict_bulk: bool = False
    scopes: list[str] | None = None
    webhook_url: str | None = None
    seed: int = 0
    import_delay: float = 0.05
    #: Pre-create the lists examples/config.yaml refers to (VIPLST, LAPSED, ONBOAR, WINBAK).
    example_lists: bool = False


def _derive(seed: int, label: str, length: int) -> str:
    return hashlib.sha256(f"klaviyo-segment-sandbox:{seed}:{label}".encode()).hexdigest()[:length]


class Sandbox:
    """Both emulators, each served by uvicorn in its own background thread and event loop."""

    def __init__(self, options: SandboxOptions | None = None, **overrides: Any) -> None:
        self.options = options or SandboxOptions(**overrides)
        seed = self.options.seed
        self.klaviyo_api_key = "pk_" + _derive(seed, "klaviyo-key", 34)
        self.klaviyo_webhook_secret = "whsec_" + _derive(seed, "klaviyo-webhook", 32)
        self.segment_write_key = _derive(seed, "segment-write-key", 32)
        self.segment_shared_secret = _derive(seed, "segment-shared-secret", 40)
        self.klaviyo_url = ""
        self.segment_url = ""
        self._stops: list[Callable[[], None]] = []
        self.klaviyo_app = create_app(
            KlaviyoSandboxConfig(
                api_key=self.klaviyo_api_key,
                webhook_secret=self.klaviyo_webhook_secret,
                webhook_url=self.options.webhook_url,
                webhook_id="01" + _derive(seed, "webhook-id", 24).upper(),
                account_id=_derive(seed, "account", 6),
                public_key=_derive(seed, "public", 6),
                scopes=frozenset(self.options.scopes) if self.options.scopes is not None else None,
                rate_limits=self.options.rate_limits,
                faults=self.options.faults,
                seed=seed,
                strict_bulk=self.options.strict_bulk,
                import_delay=self.options.import_delay,
                example_lists=self.options.example_lists,
            )
        )
        self.segment_app = create_segment_app(self.segment_write_key)

    def start(self) -> Sandbox:
        """Bind both ports first (a busy port is a ConfigError, exit 2 in the CLI), then serve."""
        try:
            self.klaviyo_url, stop = serve_in_thread(self.klaviyo_app, self.options.host, self.options.port_klaviyo)
            self._stops.append(stop)
            self.segment_url, stop = serve_in_thread(self.segment_app, self.options.host, self.options.port_segment)
            self._stops.append(stop)
        except OSError as exc:
            self.stop()
            raise ConfigError(f"sandbox: cannot listen on {self.options.host}: {exc.strerror or exc}") from exc
        return self

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()

    def info(self) -> dict[str, str]:
        """The JSON line of the contract (base URLs without /api or /v1)."""
        return {
            "klaviyo": self.klaviyo_url,
            "segment": self.segment_url,
            "klaviyo_api_key": self.klaviyo_api_key,
            "klaviyo_webhook_secret": self.klaviyo_webhook_secret,
            "segment_write_key": self.segment_write_key,
            "segment_shared_secret": self.segment_shared_secret,
        }

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Sandbox:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
