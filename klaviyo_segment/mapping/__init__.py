"""Declarative Segment -> Klaviyo mapping: templates (compiled once), chains, filters, polars frames.

The syntax reference is docs/mapping.md.
"""

from __future__ import annotations

from klaviyo_segment.mapping.builtins import BUILTIN_TEMPLATES, builtin_spec
from klaviyo_segment.mapping.chain import TemplateChain, compile_template
from klaviyo_segment.mapping.filters import TrackFilter
from klaviyo_segment.mapping.models import EventMapping, MappingError, ProfileMapping
from klaviyo_segment.mapping.template import DEFAULT_NULLS, CompiledTemplate

__all__ = [
    "BUILTIN_TEMPLATES",
    "DEFAULT_NULLS",
    "CompiledTemplate",
    "EventMapping",
    "MappingError",
    "ProfileMapping",
    "TemplateChain",
    "TrackFilter",
    "builtin_spec",
    "compile_template",
]
