"""Metrics task (Prefect wrapper of ``services.metrics``)."""

from __future__ import annotations

from prefect import task

from klaviyo_segment.services import metrics as svc
from klaviyo_segment.services.bulk import CredentialsOrClient
from klaviyo_segment.tasks._common import TASK_OPTIONS


@task(name="klaviyo-get-metrics", **TASK_OPTIONS)
async def get_metrics(credentials: CredentialsOrClient, *, integration_name: str | None = None) -> dict[str, str]:
    """See :func:`klaviyo_segment.services.metrics.get_metrics`."""
    return await svc.get_metrics(credentials, integration_name=integration_name)
