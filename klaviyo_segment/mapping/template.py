"""Template compilation: validate a spec once, then map messages with precompiled closures.

Every spec mistake raises ConfigError naming the template, the field and the problem, at load time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klaviyo_segment.builders.limits import email_problem, event_time_problem, metric_name_problem
from klaviyo_segment.errors import ConfigError
from klaviyo_segment.mapping import fields as catalogue
from klaviyo_segment.mapping.codegen import Field, Passthrough, generate
from klaviyo_segment.mapping.countries import country_code
from klaviyo_segment.mapping.expressions import ExpressionError, compile_expression, plan_expression
from klaviyo_segment.mapping.filters import compile_globs, compile_predicate
from klaviyo_segment.mapping.models import EventMapping, MappingError, ProfileMapping
from klaviyo_segment.mapping.paths import PathError, compile_path, first_key
from klaviyo_segment.mapping.transforms import (
    MESSAGE_COUNTRY,
    Drop,
    to_bool,
    to_e164,
    to_iso8601,
    to_number,
    to_string,
)

KINDS = ("identify", "track")
NULLS = ("ignore", "clear")
DEFAULT_NULLS = "ignore"
_TEMPLATE_KEYS = {"name", "kind", "description", "match", "nulls", "fields", "properties", "expand", "overrides"}
_OVERRIDE_KEYS = {"when", "fields"}
_PROPERTIES_KEYS = {"from", "exclude", "rename", "exclude_mapped"}
_EXPAND_KEYS = {"when", "each", "fields", "properties"}
#: A null never clears these: wiping an identifier would detach the profile, not blank a field.
_NEVER_CLEARED = {"email", "phone_number", "external_id", "anonymous_id"}
#: Not a Klaviyo field: the country national-format phone numbers of the message are read in (Segment's
#: ``country_code``). Without it: traits.address.country, then context.location.country, then the default.
_COUNTRY_TARGETS = {"identify": "country_code", "track": "profile.country_code"}
_COUNTRY_PATHS = ("$.traits.address.country", "$.context.traits.address.country", "$.context.location.country")

#: Static types each Klaviyo field type accepts from an expression (``any`` is checked at runtime).
_ACCEPTS = {
    "string": {"any", "string", "datetime", "number", "phone"},
    "phone": {"any", "string", "number", "phone"},
    "datetime": {"any", "string", "datetime", "number"},
    "number": {"any", "number"},
    "coordinate": {"any", "number", "string"},
    "boolean": {"any", "boolean"},
    "object": {"any", "object"},
    "any": {"any", "string", "datetime", "number", "boolean", "object", "array", "phone"},
}
#: Static types that already are what a Klaviyo field type needs: no runtime coercion.
_ALREADY = {
    "string": {"string", "datetime", "phone"},
    "phone": {"phone"},
    "datetime": {"datetime"},
    "number": {"number"},
    "boolean": {"boolean"},
    "coordinate": {"number", "string"},
    "object": {"object"},
}


def _coordinate(v: Any) -> Any:
    if isinstance(v, str):
        return v
    return to_number(v)


def _object(v: Any) -> Any:
    if not isinstance(v, dict):
        raise Drop("not an object")
    return v


def _coercer(field_type: str, country: str) -> Callable[[Any], Any] | None:
    """Final conversion to what Klaviyo accepts; runs after the user's transforms (idempotent on good values)."""
    if field_type == "phone":
        return lambda v: to_e164(v, country)
    return {
        "string": to_string,
        "datetime": to_iso8601,
        "number": to_number,
        "coordinate": _coordinate,
        "boolean": to_bool,
        "object": _object,
    }.get(field_type)


class _Block:
    """Compiled ``fields`` + ``properties`` of a template or of one expand entry; ``build`` is generated code."""

    def __init__(
        self, fields: list[Field], passthrough: Passthrough | None, props_key: tuple[str, ...], label: str
    ) -> None:
        self.fields = fields
        self.passthrough = passthrough
        self.props_key = props_key
        self.build, self.source = generate(fields, passthrough, props_key[0], label)


def _fail(template: str, where: str, problem: str) -> ConfigError:
    return ConfigError(f"template {template!r}, {where}: {problem}")


class CompiledTemplate:
    """A validated template. ``apply`` returns None when the template does not handle the message."""

    def __init__(self, spec: dict[str, Any], *, name: str | None = None, phone_default_country: str = "US") -> None:
        if not isinstance(spec, dict):
            raise ConfigError(f"template {name!r}: a template is a mapping, got {type(spec).__name__}")
        self.name: str = str(name or spec.get("name") or "")
        if not self.name:
            raise ConfigError("template without a name: set 'name'")
        unknown = set(spec) - _TEMPLATE_KEYS
        if unknown:
            raise _fail(
                self.name, f"key {sorted(unknown)[0]!r}", f"unknown key (allowed: {', '.join(sorted(_TEMPLATE_KEYS))})"
            )
        kind = spec.get("kind")
        if kind not in KINDS:
            raise _fail(self.name, "key 'kind'", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind: str = kind
        nulls = spec.get("nulls", DEFAULT_NULLS)
        if nulls not in NULLS:
            raise _fail(self.name, "key 'nulls'", f"must be one of {', '.join(NULLS)}, got {nulls!r}")
        self.nulls: str = nulls
        self.spec = spec
        self._country = phone_default_country
        self._country_expr: Callable[[dict[str, Any], Any], Any] | None = None
        self._country_paths = [compile_path(p) for p in _COUNTRY_PATHS]
        self._events, self._where = self._compile_match(spec.get("match"), "match")
        self._always = self._events is None and not self._where
        self._main = self._compile_block(spec.get("fields"), spec.get("properties"), "fields", item_scope=False)
        if kind == "track" and not any(f.target == "metric" for f in self._main.fields):
            raise _fail(self.name, "fields", "a track template must set 'metric' (e.g. metric: $.event)")
        self._expand = self._compile_expand(spec.get("expand"))
        self._overrides = self._compile_overrides(spec.get("overrides"))

    # -- compilation -------------------------------------------------------------------------------------
    def _compile_match(self, match: Any, where: str) -> tuple[Any, list[Any]]:
        if match is None:
            return None, []
        if not isinstance(match, dict) or set(match) - {"events", "where"}:
            raise _fail(
                self.name, f"key {where!r}", "expected a mapping with 'events' (globs) and/or 'where' (predicates)"
            )
        if "events" in match and self.kind != "track":
            raise _fail(self.name, f"{where}.events", "only track templates match on event names")
        events = compile_globs(match.get("events", []), f"template {self.name!r}, {where}.events")
        preds = [
            compile_predicate(p, f"template {self.name!r}, {where}.where[{i}]")
            for i, p in enumerate(match.get("where", []) or [])
        ]
        return events, [p for p, _ in preds]

    def _compile_block(self, fields: Any, properties: Any, where: str, *, item_scope: bool) -> _Block:
        if fields is None:
            fields = {}
        if not isinstance(fields, dict):
            raise _fail(self.name, where, "expected a mapping of Klaviyo field -> source expression")
        compiled: list[Field] = []
        read_paths: list[str] = []
        for target, expr in fields.items():
            label = f"field {target!r}"
            if not item_scope and target == _COUNTRY_TARGETS[self.kind]:
                try:
                    self._country_expr = compile_expression(expr, scalar=True, phone_default_country=self._country)[0]
                except ExpressionError as exc:
                    raise _fail(self.name, label, str(exc)) from None
                continue
            try:
                field = catalogue.resolve(self.kind, str(target))
            except KeyError as exc:
                raise _fail(self.name, label, exc.args[0]) from None
            if field.free:
                raise _fail(
                    self.name,
                    label,
                    "write individual keys (properties.<key>) or use the 'properties' block to copy a whole object",
                )
            if item_scope and str(target).split(".")[0] == "profile":
                raise _fail(self.name, label, "expanded events reuse the parent event's profile")
            try:
                plan, static, paths = plan_expression(
                    expr, scalar=field.type not in ("object", "any"), phone_default_country=self._country
                )
            except ExpressionError as exc:
                raise _fail(self.name, label, str(exc)) from None
            if static not in _ACCEPTS[field.type]:
                raise _fail(
                    self.name,
                    label,
                    f"type mismatch: the expression produces {static} but Klaviyo field {target!r} is {field.type}",
                )
            if not item_scope and any(p.startswith("@") for p in paths):
                raise _fail(self.name, label, "'@' paths only exist inside an 'expand' entry")
            read_paths.extend(paths)
            clear = self.nulls == "clear" and field.nullable and field.path[-1] not in _NEVER_CLEARED
            coerce = None if static in _ALREADY.get(field.type, ()) else _coercer(field.type, self._country)
            compiled.append(Field(str(target), field.path, plan, coerce, field.type, clear))
        props_key = ("properties",)
        return _Block(
            compiled, self._compile_properties(properties, where, read_paths), props_key, f"{self.name}:{where}"
        )

    def _compile_properties(self, spec: Any, where: str, read_paths: list[str]) -> Passthrough | None:
        if spec is None:
            return None
        label = f"{where.replace('fields', 'properties')}"
        if isinstance(spec, str):
            spec = {"from": spec}
        if not isinstance(spec, dict) or "from" not in spec or set(spec) - _PROPERTIES_KEYS:
            raise _fail(
                self.name,
                label,
                f"expected a path or a mapping with 'from' (allowed keys: {', '.join(sorted(_PROPERTIES_KEYS))})",
            )
        sources = spec["from"] if isinstance(spec["from"], list) else [spec["from"]]
        if not sources:
            raise _fail(self.name, f"{label}.from", "expected a path or a non-empty list of paths")
        getters = []
        for path in sources:
            try:
                getters.append((str(path), compile_path(str(path))))
            except PathError as exc:
                raise _fail(self.name, f"{label}.from", str(exc)) from None
        source, getter = getters[-1]
        exclude = spec.get("exclude", [])
        rename = spec.get("rename", {})
        if not isinstance(exclude, list) or not all(isinstance(k, str) for k in exclude):
            raise _fail(self.name, f"{label}.exclude", "expected a list of keys")
        if not isinstance(rename, dict) or not all(isinstance(v, str) for v in rename.values()):
            raise _fail(self.name, f"{label}.rename", "expected a mapping of old key -> new key")
        excluded = set(exclude)
        if spec.get("exclude_mapped", self.kind == "identify"):
            excluded.update(k for p in read_paths for s, _ in getters if (k := first_key(p, s)) is not None)
        return Passthrough(
            getter, source, frozenset(excluded), dict(rename), self.nulls == "clear", tuple(getters[:-1])
        )

    def _compile_expand(self, spec: Any) -> list[tuple[Any, list[Any], Callable[..., Any], _Block]]:
        if spec is None:
            return []
        if self.kind != "track":
            raise _fail(self.name, "key 'expand'", "only track templates can expand into several events")
        if not isinstance(spec, list):
            raise _fail(self.name, "key 'expand'", "expected a list of {when, each, fields, properties}")
        out = []
        for i, entry in enumerate(spec):
            where = f"expand[{i}]"
            if not isinstance(entry, dict) or set(entry) - _EXPAND_KEYS or "each" not in entry:
                raise _fail(
                    self.name,
                    where,
                    f"expected a mapping with 'each' (allowed keys: {', '.join(sorted(_EXPAND_KEYS))})",
                )
            events, preds = self._compile_match(entry.get("when"), f"{where}.when")
            try:
                each = compile_path(str(entry["each"]))
            except PathError as exc:
                raise _fail(self.name, f"{where}.each", str(exc)) from None
            block = self._compile_block(
                entry.get("fields"), entry.get("properties"), f"{where}.fields", item_scope=True
            )
            if not any(f.target == "metric" for f in block.fields):
                raise _fail(self.name, f"{where}.fields", "each expanded event needs a 'metric'")
            out.append((events, preds, each, block))
        return out

    def _compile_overrides(self, spec: Any) -> list[tuple[Any, list[Any], _Block]]:
        """``overrides: [{when: {events: [...]}, fields: {...}}]``: fields that replace the main ones for the
        messages ``when`` matches (an override that maps to nothing keeps the main value)."""
        if spec is None:
            return []
        if not isinstance(spec, list):
            raise _fail(self.name, "key 'overrides'", "expected a list of {when, fields}")
        out = []
        for i, entry in enumerate(spec):
            where = f"overrides[{i}]"
            if not isinstance(entry, dict) or set(entry) - _OVERRIDE_KEYS or "when" not in entry:
                raise _fail(self.name, where, "expected a mapping with 'when' and 'fields'")
            events, preds = self._compile_match(entry["when"], f"{where}.when")
            out.append(
                (events, preds, self._compile_block(entry.get("fields"), None, f"{where}.fields", item_scope=False))
            )
        return out

    # -- runtime -----------------------------------------------------------------------------------------
    def _matches(self, msg: dict[str, Any], events: Any, preds: list[Any]) -> bool:
        if events is not None:
            event = msg.get("event")
            if not isinstance(event, str) or not events.match(event):
                return False
        return all(p(msg) for p in preds)

    def apply(self, message: dict[str, Any]) -> list[ProfileMapping | EventMapping] | None:
        """Map one message; None = not handled here (the chain tries the next template)."""
        mtype = message.get("type")
        if mtype is not None and mtype != self.kind:
            return None
        if not self._always and not self._matches(message, self._events, self._where):
            return None
        warnings: list[str] = []
        token = MESSAGE_COUNTRY.set(self._message_country(message))
        try:
            return self._apply(message, warnings)
        finally:
            MESSAGE_COUNTRY.reset(token)

    def _message_country(self, message: dict[str, Any]) -> str | None:
        """The message's own country for phone numbers: the template's ``country_code`` field, else the
        address/location country (names or codes); None = the configured default."""
        if self._country_expr is not None:
            try:
                value = self._country_expr(message, None)
            except Drop:
                value = None
            found = country_code(value)
            if found:
                return found
        for getter in self._country_paths:
            found = country_code(getter(message, None))
            if found:
                return found
        return None

    def _apply(self, message: dict[str, Any], warnings: list[str]) -> list[ProfileMapping | EventMapping]:
        out = self._main.build(message, None, warnings)
        for events, preds, block in self._overrides:
            if self._matches(message, events, preds):
                _merge(out, block.build(message, None, warnings))
        if self.kind == "identify":
            problem = email_problem(out.get("email"))
            if problem:
                raise MappingError(problem)
            return [ProfileMapping(out, warnings)]
        parent = self._event(out, warnings, None)
        results: list[ProfileMapping | EventMapping] = [parent]
        for events, preds, each, block in self._expand:
            if not self._matches(message, events, preds):
                continue
            items = each(message, None)
            if not isinstance(items, list):
                continue
            for index, element in enumerate(items):
                child_warnings: list[str] = []
                child = self._event(block.build(message, (element, index), child_warnings), child_warnings, parent)
                results.append(child)
        return results

    def _event(self, out: dict[str, Any], warnings: list[str], parent: EventMapping | None) -> EventMapping:
        metric = out.get("metric")
        if not metric:
            raise MappingError(f"template {self.name!r}: no metric name (is 'event' missing?)")
        time = out.get("time")
        profile = dict(parent.profile) if parent is not None else out.get("profile", {})
        problem = metric_name_problem(metric) or event_time_problem(time) or email_problem(profile.get("email"))
        if problem:
            raise MappingError(problem)
        return EventMapping(
            metric=metric,
            properties=out.get("properties", {}),
            time=time if time is not None or parent is None else parent.time,
            value=out.get("value"),
            value_currency=out.get("value_currency"),
            unique_id=out.get("unique_id"),
            profile=profile,
            warnings=warnings,
        )

    def __repr__(self) -> str:
        return f"CompiledTemplate(name={self.name!r}, kind={self.kind!r})"


def _merge(out: dict[str, Any], override: dict[str, Any]) -> None:
    """Override fields win; nested objects (profile, location, properties) merge key by key."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            _merge(out[key], value)
        else:
            out[key] = value
