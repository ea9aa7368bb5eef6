"""The product stands apart from its dev kit: importing it loads no dev-kit module nor the dev kit's own
dependencies, and a dev-kit command without its extra says which extra to install (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

PRODUCT_MODULES = [
    "klaviyo_segment.flows",
    "klaviyo_segment.tasks",
    "klaviyo_segment.blocks",
    "klaviyo_segment.ingress.serve",
    "klaviyo_segment.ingress.receiver",
    "klaviyo_segment.ingress.dispatcher",
    "klaviyo_segment.backfill",
    "klaviyo_segment.preview",
    "klaviyo_segment.doctor",
    "klaviyo_segment.store",
]


def test_product_imports_no_devkit_module_or_dependency() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {PRODUCT_MODULES!r}: importlib.import_module(name)\n"
        "from klaviyo_segment.flows import all_specs\n"
        "assert len(all_specs()) >= 6\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('klaviyo_segment.devkit', "
        "'klaviyo_segment.bench', 'psutil', 'klaviyo_api')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_cli_loads_only_the_devkit_command_modules() -> None:
    """The CLI finds dev-kit commands through the entry point; their modules are light (no sandbox, no psutil)."""
    code = (
        "import json, sys, klaviyo_segment.cli.app\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('klaviyo_segment.devkit.sandbox', "
        "'klaviyo_segment.devkit.demo', 'klaviyo_segment.bench', 'psutil', 'klaviyo_api')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_devkit_command_without_its_extra_names_the_extra(monkeypatch) -> None:
    import importlib.util

    from klaviyo_segment.cli.app import app

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == "jsonschema" else real(name, *a, **k)
    )
    result = CliRunner().invoke(app, ["sandbox"])
    assert result.exit_code != 0
    assert "klaviyo-segment[devkit]" in str(result.exception) + result.output
    assert "jsonschema" in str(result.exception) + result.output


def test_devkit_commands_are_registered_through_the_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="klaviyo_segment.cli")}
    assert names.get("devkit") == "klaviyo_segment.devkit.cli:register"
    from klaviyo_segment.cli.app import DEVKIT_COMMANDS, app

    registered = {c.name for c in app.registered_commands}
    assert set(DEVKIT_COMMANDS) <= registered
