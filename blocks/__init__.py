"""Prefect blocks: configuration only (credentials, mapping tables, the state-store location).

Register them with ``prefect block register -m klaviyo_segment.blocks``.
"""

from klaviyo_segment.blocks.klaviyo import KlaviyoCredentials
from klaviyo_segment.blocks.mapping import MappingTables
from klaviyo_segment.blocks.segment import SegmentCredentials
from klaviyo_segment.blocks.store import StateStore

__all__ = ["KlaviyoCredentials", "MappingTables", "SegmentCredentials", "StateStore"]
