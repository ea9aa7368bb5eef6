"""Every package directory ships: the package list in pyproject.toml is explicit (package-dir maps flows/,
tasks/, blocks/, bench/ and devkit/ into klaviyo_segment), so a new subpackage missing from it would be absent
from a real (non-editable) install while every editable-install test still passed."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_directory_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    dirs = {name: Path(path) for name, path in config["tool"]["setuptools"]["package-dir"].items()}
    found = set()
    for package, base in dirs.items():
        for init in (ROOT / base).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / base)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    # a mapped top-level dir also appears under klaviyo_segment/ only through its mapping
    assert found - listed == set(), f"package directories missing from [tool.setuptools] packages: {found - listed}"
    assert listed - found == set(), f"listed packages without a directory: {listed - found}"
