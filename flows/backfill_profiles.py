"""Flow ``backfill-profiles``: one export file -> Klaviyo bulk profile import jobs (initial sync).

The same code as ``klaviyo-segment backfill`` (klaviyo_segment.backfill), run as a Prefect flow so it can be
started from the UI: a progress artifact follows the rows read, and a table artifact summarises the run.
Credentials never travel as parameters: they come from the environment or the saved blocks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow

from klaviyo_segment.backfill import BackfillOptions, BackfillReport, backfill_file
from klaviyo_segment.flowspec import FlowSpec

NAME = "backfill-profiles"
logger = logging.getLogger("klaviyo_segment.flows.backfill")
#: Progress updates are API calls: only every this many percent.
_STEP = 2.0


class _ProgressArtifact:
    def __init__(self) -> None:
        self.artifact_id: Any = None
        self.last = -_STEP

    async def __call__(self, done: int, total: int | None, _report: BackfillReport) -> None:
        from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

        percent = 100.0 * done / total if total else 0.0
        if percent - self.last < _STEP and percent < 100.0:
            return
        self.last = percent
        try:
            if self.artifact_id is None:
                self.artifact_id = await acreate_progress_artifact(
                    percent, key="backfill-profiles-progress", description="rows read and mapped"
                )
            else:
                await aupdate_progress_artifact(self.artifact_id, percent)
        except Exception as exc:  # an artifact must never fail a backfill
            logger.warning("could not update the progress artifact: %s", exc)


async def _summary_artifact(report: BackfillReport) -> None:
    from prefect.artifacts import acreate_table_artifact

    keys = (
        "rows",
        "sent",
        "skipped",
        "failed",
        "invalid",
        "warnings",
        "resumed_rows",
        "jobs_submitted",
        "jobs_resumed",
        "seconds",
        "rejects_path",
        "already_complete",
    )
    table = [{"metric": k, "value": str(getattr(report, k))} for k in keys]
    try:
        await acreate_table_artifact(
            table=table, key="backfill-profiles-summary", description=f"backfill of {report.input}"
        )
    except Exception as exc:
        logger.warning("could not create the summary artifact: %s", exc)


@flow(name=NAME, log_prints=False)
async def backfill_profiles(
    input: str,
    format: str | None = None,
    list_id: str | None = None,
    force: bool = False,
    config: dict[str, Any] | None = None,
    config_block: str | None = None,
) -> dict[str, Any]:
    """Backfill one export (path readable by the worker). Resumes automatically; ``force`` sends it again."""
    from klaviyo_segment import runtime
    from klaviyo_segment.settings import credentials_document

    app_config = runtime.load_flow_config(config, config_block)
    if list_id:
        logger.warning('adding profiles to list %s can trigger its "Added to list" flows', list_id)
    report = await backfill_file(
        Path(input),
        config=app_config,
        raw_config=dict(credentials_document(config)),
        fmt=format,
        options=BackfillOptions(list_ids=[list_id] if list_id else [], force=force),
        progress=_ProgressArtifact(),
    )
    await _summary_artifact(report)
    return report.as_dict()


SPEC = FlowSpec(name=NAME, flow=backfill_profiles)
