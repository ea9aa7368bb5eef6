"""The project's durable state store (SQLite by default, PostgreSQL to scale out). See :class:`Store`."""

from klaviyo_segment.store.engine import StoreError, default_url, normalize_url
from klaviyo_segment.store.facade import Store
from klaviyo_segment.store.inbox import STAGED_PREFIX
from klaviyo_segment.store.migrations import LATEST as SCHEMA_VERSION
from klaviyo_segment.store.models import AcceptResult, Batch, BatchInfo, DeadLetter, DeadLetterIn

__all__ = [
    "AcceptResult",
    "Batch",
    "BatchInfo",
    "DeadLetter",
    "DeadLetterIn",
    "SCHEMA_VERSION",
    "STAGED_PREFIX",
    "Store",
    "StoreError",
    "default_url",
    "normalize_url",
]
