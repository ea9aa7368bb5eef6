"""prefect.yaml steps: refuse a deployment whose project directory is not set, with a message saying how to fix it.

Why: prefect.yaml's pull step takes the checkout from ``{{ $KLAVIYO_SEGMENT_PROJECT_DIR }}``. When the variable
is unset, ``prefect deploy`` keeps the literal template as the working directory and every run later fails on the
worker with an unrelated-looking "No such file or directory". The build step fails ``prefect deploy`` itself; the
pull step fails the run on a worker the same way (e.g. a deployment made before this check existed).
"""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "KLAVIYO_SEGMENT_PROJECT_DIR"


def _checked(directory: str | None) -> Path:
    if not directory or "{{" in directory:
        raise ValueError(
            f"${VARIABLE} is not set: set it to the absolute path of the klaviyo-segment checkout "
            f"the workers run (e.g. `{VARIABLE}=$PWD prefect deploy --all`)"
        )
    path = Path(directory)
    if not path.is_absolute() or not (path / "flows").is_dir():
        raise ValueError(
            f"${VARIABLE}={directory!r} is not the absolute path of a klaviyo-segment checkout "
            "(it has no flows/ directory)"
        )
    return path


def check_project_dir(directory: str | None = None) -> dict[str, str]:
    """Build step (runs at ``prefect deploy``): the directory is set and is a checkout."""
    return {"directory": str(_checked(directory))}


def set_project_dir(directory: str | None = None) -> dict[str, str]:
    """Pull step (runs on the worker): like Prefect's ``set_working_directory``, with the check above."""
    path = _checked(directory)
    os.chdir(path)
    return {"directory": str(path)}
