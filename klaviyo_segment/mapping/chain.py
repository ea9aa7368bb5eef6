"""Template compilation entry point and ordered template chains (first matching template handles)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.mapping.builtins import BUILTIN_TEMPLATES, builtin_spec
from klaviyo_segment.mapping.models import EventMapping, ProfileMapping
from klaviyo_segment.mapping.template import CompiledTemplate


def compile_template(
    spec: dict[str, Any] | str,
    *,
    phone_default_country: str = "US",
    name: str | None = None,
    event_names: str = "klaviyo",
) -> CompiledTemplate:
    """Compile a spec (or a built-in by name) once; raises ConfigError naming template, field and problem.
    ``event_names`` applies to built-ins only (``track.event_names``)."""
    if isinstance(spec, str):
        found = builtin_spec(spec, event_names=event_names)
        if found is None:
            raise ConfigError(f"unknown template {spec!r} (built-ins: {', '.join(BUILTIN_TEMPLATES)})")
        spec = found
    return CompiledTemplate(spec, name=name, phone_default_country=phone_default_country)


class TemplateChain:
    """Templates for one message type, tried in order; the first that matches handles the message."""

    def __init__(self, templates: Iterable[CompiledTemplate]) -> None:
        self.templates = list(templates)
        kinds = {t.kind for t in self.templates}
        if len(kinds) > 1:
            raise ConfigError(f"a template chain mixes kinds {sorted(kinds)}: keep identify and track chains apart")

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.templates]

    def match(self, message: dict[str, Any]) -> tuple[CompiledTemplate, list[ProfileMapping | EventMapping]] | None:
        """Like :meth:`map` but also says which template handled the message (for previews and outcomes)."""
        for template in self.templates:
            result = template.apply(message)
            if result is not None:
                return template, result
        return None

    def map(self, message: dict[str, Any]) -> list[ProfileMapping | EventMapping] | None:
        """None when no template handles the message (flows skip it: 'no template matched')."""
        found = self.match(message)
        return found[1] if found is not None else None
