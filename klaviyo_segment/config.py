"""The deployment config file (YAML): mapping tables, filters, flow settings and optional connection settings.

Every model forbids unknown keys, so a typo (``track: {alow: ...}``) is an exit-2 error naming the key
instead of a silently ignored setting. Reference: docs/mapping.md ("Config file").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.mapping import BUILTIN_TEMPLATES, TemplateChain, TrackFilter, compile_template
from klaviyo_segment.mapping.template import CompiledTemplate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemplatesConfig(_Strict):
    identify: list[str] = Field(default_factory=lambda: ["identify-default"])
    track: list[str] = Field(default_factory=lambda: ["ecommerce", "track-default"])


class TrackConfig(_Strict):
    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)
    where: list[dict[str, Any]] = Field(default_factory=list)
    #: Metric names of the ecommerce template: Klaviyo's ("Placed Order") or Segment's as sent ("Order
    #: Completed"), for users migrating from Segment's Klaviyo destination whose flows use Segment's names.
    event_names: Literal["klaviyo", "segment"] = "klaviyo"


class OnboardingConfig(_Strict):
    events: list[str] = Field(default_factory=lambda: ["Signed Up", "Account Created"])
    list_id: str | None = None
    max_age_days: float = Field(default=7, gt=0)
    sms_consent_trait: str = "sms_consent"
    #: Unset (default, as the template): a qualifying sign-up subscribes email unless the person ever opted out.
    #: Set: email is subscribed only when this trait (or event property) is ``true``, like ``sms_consent_trait``.
    email_consent_trait: str | None = None


class ConsentConfig(_Strict):
    """sync-consent: Segment consent events/traits -> Klaviyo subscribe/unsubscribe jobs (docs/consent.md)."""

    #: Off by default: the flow is routed no messages, so existing deployments see no change.
    enabled: bool = False
    subscribe_events: list[str] = Field(default_factory=lambda: ["User Subscribed"])
    unsubscribe_events: list[str] = Field(default_factory=lambda: ["User Unsubscribed"])
    #: Channels an event changes (each only when the message carries that identifier), as Segment's actions do.
    event_channels: list[Literal["email", "sms"]] = Field(default_factory=lambda: ["email", "sms"])  # type: ignore[arg-type]
    #: Identify traits whose ``true``/``false`` subscribes/unsubscribes one channel; null disables the trait.
    email_trait: str | None = "email_subscribed"
    sms_trait: str | None = "sms_subscribed"
    #: Subscribe into this list and unsubscribe from it; null: subscribe without a list (account default opt-in)
    #: and unsubscribe GLOBALLY. Klaviyo globally unsubscribes profiles that are not in the given list.
    list_id: str | None = None
    custom_source: str = "Segment"
    #: Sends consented_at (the event time) and skips double opt-in and "Added to list" flows. Never automatic.
    historical_import: bool = False


class ChurnConfig(_Strict):
    audience_key: str = "churn_risk_users"
    trait: str = "churn_risk_score"
    threshold: float = 0.7
    list_id: str | None = None


class PageScreenConfig(_Strict):
    enabled: bool = False


class EngagementConfig(_Strict):
    lookback_minutes: float = Field(default=10, gt=0)


class DeadLettersConfig(_Strict):
    threshold: int = Field(default=100, ge=1)


class KlaviyoConfig(_Strict):
    api_key: SecretStr | None = None
    base_url: str | None = None
    revision: str | None = None


class SegmentConfig(_Strict):
    write_key: SecretStr | None = None
    base_url: str | None = None
    region: Literal["us", "eu"] | None = None
    shared_secret: SecretStr | None = None
    #: the receiver's whole-request credential (``Authorization: Bearer``); $SEGMENT_WEBHOOK_TOKEN wins over it
    webhook_token: SecretStr | None = None


class IdentityConfig(_Strict):
    """How sync-identify treats identities. ``merge_anonymous``: merge a Klaviyo profile that has no userId (an
    anonymous visitor's, or an email-only lead's) into the known person's profile on alias/identify; off by
    default because a merge cannot be undone."""

    merge_anonymous: bool = False


class StoreConfig(_Strict):
    url: str | None = None


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    """What the flows use at runtime: compiled template chains and the track filter."""

    identify: TemplateChain
    track: TemplateChain
    track_filter: TrackFilter


#: Secrets never go into the mapping-tables block: credentials have their own blocks.
SECRET_KEYS = {"klaviyo": ("api_key",), "segment": ("write_key", "shared_secret", "webhook_token")}


class AppConfig(_Strict):
    templates: TemplatesConfig = Field(default_factory=TemplatesConfig)
    custom_templates: dict[str, dict[str, Any]] = Field(default_factory=dict)
    track: TrackConfig = Field(default_factory=TrackConfig)
    audiences: dict[str, str] = Field(default_factory=dict)
    audiences_create_lists: bool = False
    onboarding: OnboardingConfig = Field(default_factory=OnboardingConfig)
    churn: ChurnConfig = Field(default_factory=ChurnConfig)
    consent: ConsentConfig = Field(default_factory=ConsentConfig)
    phone_default_country: str = "US"
    page_screen: PageScreenConfig = Field(default_factory=PageScreenConfig)
    max_event_age_hours: float = Field(default=24, gt=0)
    engagement: EngagementConfig = Field(default_factory=EngagementConfig)
    dead_letters: DeadLettersConfig = Field(default_factory=DeadLettersConfig)
    klaviyo: KlaviyoConfig = Field(default_factory=KlaviyoConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)

    _compiled: CompiledConfig | None = PrivateAttr(default=None)

    @field_validator("phone_default_country")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown country {value!r}: use an ISO-3166 alpha-2 code such as US, GB, DE")
        return value.upper()

    @classmethod
    def from_document(cls, document: Any, *, source: str = "config") -> AppConfig:
        """Validate a parsed document; every problem becomes one ConfigError naming the dotted key."""
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(document).__name__}")
        try:
            config = cls.model_validate(document)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_describe(exc)}") from None
        config.compiled()  # templates and filters fail here, at load time
        return config

    def compiled(self) -> CompiledConfig:
        """Compile templates and filters once per config object (read on every message: the slot is read
        directly, as pydantic's private-attribute lookup costs ~10 us)."""
        private = self.__pydantic_private__
        cached = private.get("_compiled") if private else None
        if cached is not None:
            return cached
        if self._compiled is None:
            self._compiled = CompiledConfig(
                identify=TemplateChain(self._chain("identify")),
                track=TemplateChain(self._chain("track")),
                track_filter=TrackFilter(self.track.allow, self.track.deny, self.track.where),
            )
        return self._compiled

    def _chain(self, kind: str) -> list[CompiledTemplate]:
        names = getattr(self.templates, kind)
        out = []
        for i, name in enumerate(names):
            where = f"templates.{kind}[{i}]"
            if name in self.custom_templates:
                template = compile_template(
                    self.custom_templates[name], name=name, phone_default_country=self.phone_default_country
                )
            elif name in BUILTIN_TEMPLATES:
                template = compile_template(
                    name, phone_default_country=self.phone_default_country, event_names=self.track.event_names
                )
            else:
                known = [*BUILTIN_TEMPLATES, *self.custom_templates]
                raise ConfigError(f"{where}: unknown template {name!r} (known: {', '.join(known)})")
            if template.kind != kind:
                raise ConfigError(f"{where}: template {name!r} is a {template.kind} template, not {kind}")
            out.append(template)
        return out

    def require(self, flow_name: str) -> None:
        """Fail before a run starts when the flow's required keys (``FlowSpec.required_config_keys``) are unset."""
        from klaviyo_segment.flows import required_config_keys

        for key in required_config_keys(flow_name):
            section, field = key.split(".")
            if not getattr(getattr(self, section), field):
                raise ConfigError(
                    f"flow {flow_name!r} needs config key {key!r} (set it in the config file or the "
                    "mapping-tables block)"
                )

    def mapping_document(self) -> dict[str, Any]:
        """The document stored in the MappingTables block: everything except secrets."""
        doc = self.model_dump(mode="json", exclude_unset=True)
        for section, keys in SECRET_KEYS.items():
            for key in keys:
                if isinstance(doc.get(section), dict):
                    doc[section].pop(key, None)
        return doc


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        else:
            parts.append(f"{key}: {error['msg']}")
    return "; ".join(parts)


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config file; unreadable or invalid -> ConfigError (CLI exit 2)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.__class__.__name__}: {exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    return AppConfig.from_document(document, source=f"config file {str(path)!r}")
