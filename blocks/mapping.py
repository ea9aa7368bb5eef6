"""Mapping tables block: a deployment's config document (templates, filters, audiences, flow settings) kept in
Prefect so it can be edited in the UI and shared by deployments. Credentials are deliberately not part of it.

Typed on purpose: its fields are the config file's own pydantic models (``klaviyo_segment.config``), so the
Prefect UI renders a form per section instead of one minified JSON line, and an invalid value is rejected with
the dotted key that is wrong (``track.alow: unknown key``). Documents saved by older versions (one untyped
``document`` field) still load: the document is unwrapped into the fields.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, ValidationError, model_validator

from klaviyo_segment.config import (
    AppConfig,
    ChurnConfig,
    ConsentConfig,
    DeadLettersConfig,
    EngagementConfig,
    OnboardingConfig,
    PageScreenConfig,
    TemplatesConfig,
    TrackConfig,
    _describe,
)

DEFAULT_DOCUMENT_NAME = "default"
#: Config sections that are not mapping tables: credentials and the store have their own blocks.
NOT_MAPPING = ("klaviyo", "segment", "store")


class MappingTables(Block):
    """Segment -> Klaviyo mapping tables: templates, track filters, audience lists and flow settings.

    The fields have exactly the shape of the YAML config file (see docs/mapping.md) minus credentials and the
    store; they are validated on save and on load, so a broken edit in the UI fails when a flow starts, naming the
    key, not mid-stream.

    Examples:
        Load the mapping tables and compile them:
        ```python
        from klaviyo_segment.blocks import MappingTables
        mapping_tables_block = MappingTables.load("BLOCK_NAME")
        config = mapping_tables_block.to_config()
        ```
    """

    _block_type_name = "Klaviyo Segment Mapping Tables"
    _logo_url = "https://images.ctfassets.net/gm98wzqotmnx/klaviyo-logo/klaviyo.png"  # type: ignore[assignment]  # Prefect types it HttpUrl; a str validates
    _documentation_url = "https://github.com/klaviyo-segment/klaviyo-segment/blob/main/docs/mapping.md"  # type: ignore[assignment]

    templates: TemplatesConfig = Field(
        default_factory=TemplatesConfig, description="Template chains: identify and track template names, in order."
    )
    custom_templates: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Your own templates by name (docs/mapping.md, 'Custom templates')."
    )
    track: TrackConfig = Field(
        default_factory=TrackConfig, description="Which track events are forwarded: allow/deny globs and where rules."
    )
    audiences: dict[str, str] = Field(default_factory=dict, description="Engage audience key -> Klaviyo list id.")
    audiences_create_lists: bool = Field(
        default=False, description="Create a Klaviyo list for an audience that has none."
    )
    onboarding: OnboardingConfig = Field(default_factory=OnboardingConfig, description="onboard-new-users.")
    churn: ChurnConfig = Field(default_factory=ChurnConfig, description="churn-winback.")
    consent: ConsentConfig = Field(default_factory=ConsentConfig, description="sync-consent.")
    phone_default_country: str = Field(default="US", description="ISO-3166 code for numbers without +country.")
    page_screen: PageScreenConfig = Field(
        default_factory=PageScreenConfig, description="Forward page/screen calls as events."
    )
    max_event_age_hours: float = Field(default=24, gt=0, description="Older messages are skipped.")
    engagement: EngagementConfig = Field(default_factory=EngagementConfig, description="engagement-to-segment.")
    dead_letters: DeadLettersConfig = Field(
        default_factory=DeadLettersConfig, description="Dead-letter threshold event."
    )

    @model_validator(mode="before")
    @classmethod
    def _validate_as_config(cls, data: Any) -> Any:
        """Unwrap an old ``{"document": {...}}`` and validate the whole document as the config file is validated,
        so the error names the dotted key; pydantic's own messages would say ``Value error`` at best."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        legacy = data.pop("document", None)
        if isinstance(legacy, dict):
            data = {**legacy, **data}
        document = {k: v for k, v in data.items() if not k.startswith("block_") and k not in NOT_MAPPING}
        try:
            config = AppConfig.model_validate(document)
        except ValidationError as exc:
            raise ValueError(_describe(exc)) from None
        config.compiled()  # unknown templates, bad expressions: ConfigError, a ValueError, names the key
        return data

    @classmethod
    def from_config(cls, config: AppConfig) -> MappingTables:
        """The block holding ``config``'s mapping tables (never its credentials)."""
        document = config.mapping_document()
        return cls(**{k: v for k, v in document.items() if k not in NOT_MAPPING})

    @property
    def document(self) -> dict[str, Any]:
        """The config document this block holds: the keys that differ from the defaults, as a config file has them."""
        fields = [f for f in type(self).model_fields if f not in NOT_MAPPING]
        dumped = self.model_dump(mode="json", include=set(fields), exclude_defaults=True)
        return AppConfig.model_validate(dumped).mapping_document()

    def to_config(self) -> AppConfig:
        """The validated, compilable config this block holds."""
        return AppConfig.from_document(self.document, source=f"mapping tables block {self._block_document_name!r}")
