"""The dev kit: everything that helps develop, demonstrate and measure the integration, but that a production
install does not need — the Klaviyo and Segment emulators (``sandbox``), the Segment delivery simulator, the
demo, the chaos run and its oracle. The benchmarks (``klaviyo_segment.bench``) belong to it too.

The product never imports this package (an import-linter contract in ``pyproject.toml`` checks it in CI); the
product CLI finds the dev-kit commands through the ``klaviyo_segment.cli`` entry-point group. Its third-party
dependencies are the ``devkit`` extra: ``pip install 'klaviyo-segment[devkit]'``.
"""

from __future__ import annotations

import importlib.util

#: Third-party modules the dev kit needs beyond the product's dependencies (the ``devkit`` extra).
REQUIRED_MODULES = ("jsonschema", "fastjsonschema", "psutil")
INSTALL_HINT = "pip install 'klaviyo-segment[devkit]'"


def missing_modules(extra: tuple[str, ...] = ()) -> list[str]:
    """The dev-kit dependencies (plus ``extra``) that are not importable here."""
    return [name for name in (*REQUIRED_MODULES, *extra) if importlib.util.find_spec(name) is None]


def require(command: str, extra: tuple[str, ...] = ()) -> None:
    """Fail a dev-kit command up front, naming the extra to install, instead of deep inside an import."""
    from klaviyo_segment.errors import ConfigError

    missing = missing_modules(extra)
    if missing:
        raise ConfigError(
            f"`klaviyo-segment {command}` is part of the dev kit and needs {', '.join(missing)}: {INSTALL_HINT}"
        )
