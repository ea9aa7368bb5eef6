"""Metrics: Klaviyo cannot filter metrics by name, so we page through them once and build a name -> id map."""

from __future__ import annotations

from klaviyo_segment.builders.klaviyo import filter_equals
from klaviyo_segment.services.bulk import CredentialsOrClient, client_scope


async def get_metrics(credentials: CredentialsOrClient, *, integration_name: str | None = None) -> dict[str, str]:
    """Metric name -> id. A name defined by several integrations maps to the first one returned, unless
    ``integration_name`` (e.g. ``"Klaviyo"`` for built-in email metrics) narrows the search."""
    params = {"filter": filter_equals("integration.name", integration_name)} if integration_name else None
    names: dict[str, str] = {}
    async with client_scope(credentials) as client:
        async for page in client.paginate("get_metrics", params):
            for metric in page.get("data") or []:
                name = (metric.get("attributes") or {}).get("name")
                if name:
                    names.setdefault(name, metric["id"])
    return names
