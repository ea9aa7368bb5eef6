"""Backfill fixtures: a reset sandbox account, a throwaway SQLite store and helpers to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from klaviyo_segment.devkit.sandbox.server import Sandbox


class Env:
    """Where one test's backfill sends (sandbox) and keeps its state (store)."""

    def __init__(self, box: Sandbox, client: httpx.Client, tmp: Path) -> None:
        self.box, self.client, self.tmp = box, client, tmp
        self.store_url = f"sqlite:///{tmp / 'state.db'}"

    @property
    def raw_config(self) -> dict[str, Any]:
        return {
            "klaviyo": {"api_key": self.box.klaviyo_api_key, "base_url": self.box.klaviyo_url},
            "store": {"url": self.store_url},
        }

    @property
    def environ(self) -> dict[str, str]:
        return dict(
            os.environ,
            KLAVIYO_API_KEY=self.box.klaviyo_api_key,
            KLAVIYO_BASE_URL=self.box.klaviyo_url,
            KLAVIYO_SEGMENT_STORE_URL=self.store_url,
            PYTHONUNBUFFERED="1",
        )

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "klaviyo_segment", "backfill", *args]

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cli(*args), env=self.environ, capture_output=True, text=True, timeout=120)

    def jobs(self) -> dict[str, str]:
        return self.client.get("/__sandbox").json()["import_jobs"]

    def profiles(self) -> list[dict[str, Any]]:
        body = self.client.get("/__sandbox/profiles").json()
        return body["data"] if isinstance(body, dict) else body


@pytest.fixture
def env(klaviyo: httpx.Client, sandbox: Sandbox, tmp_path: Path) -> Iterator[Env]:
    yield Env(sandbox, klaviyo, tmp_path)
