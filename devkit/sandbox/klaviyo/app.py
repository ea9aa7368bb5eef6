"""The Klaviyo emulator as one Starlette app: `/api/...` per spec operation, `/__sandbox/...` for inspection.

Layering (outermost first): rate limits and faults (ratelimit.py / faults.py), then auth, revision and
scopes, then JSON and schema validation, then the operation's handler. Scopes are checked before the body so a
key missing a scope gets 403 even for an invalid body, as Klaviyo answers.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from klaviyo_segment.devkit.sandbox import strictjson
from klaviyo_segment.devkit.sandbox.klaviyo import faults as faults_mod
from klaviyo_segment.devkit.sandbox.klaviyo import operations
from klaviyo_segment.devkit.sandbox.klaviyo.faults import wrap_app
from klaviyo_segment.devkit.sandbox.klaviyo.handlers import HANDLERS, Ctx
from klaviyo_segment.devkit.sandbox.klaviyo.ratelimit import RateLimitMiddleware, parse_mode
from klaviyo_segment.devkit.sandbox.klaviyo.state import AccountState, iso, now
from klaviyo_segment.devkit.sandbox.klaviyo.stats import SandboxStats
from klaviyo_segment.devkit.sandbox.klaviyo.validation import (
    KlaviyoError,
    check_auth,
    check_revision,
    check_scopes,
    error_response,
    errors_response,
    parse_body,
    validate_body,
)
from klaviyo_segment.devkit.sandbox.klaviyo.webhooks import TOPICS as ENGAGEMENT_TOPICS
from klaviyo_segment.devkit.sandbox.klaviyo.webhooks import emit_webhook

#: Engagement that changes consent the way it does in a real account.
_SUPPRESSION_BY_METRIC = {
    "Unsubscribed": "UNSUBSCRIBE",
    "Marked Email as Spam": "SPAM_REPORT",
    "Bounced Email": "HARD_BOUNCE",
}


@dataclass
class KlaviyoSandboxConfig:
    """Everything a Klaviyo sandbox needs; ``extra_keys`` maps further private keys to scope sets."""

    api_key: str
    webhook_secret: str = "whsec-sandbox-secret-0000"
    webhook_url: str | None = None
    webhook_id: str = "01SANDBOXWEBHOOK0000000000"
    account_id: str = "SbxAcc"
    public_key: str = "SbxPub"
    scopes: frozenset[str] | None = None
    extra_keys: dict[str, frozenset[str] | None] = field(default_factory=dict)
    rate_limits: str = "on"
    faults: str | None = None
    seed: int = 0
    strict_bulk: bool = False
    import_delay: float = 0.05
    example_lists: bool = False


#: Request bodies above this size are parsed and validated off the event loop.
LARGE_BODY = 256 * 1024


def _parse_and_validate(raw: bytes, schema: dict[str, Any]) -> tuple[Any, list[Any]]:
    body = parse_body(raw)
    return body, validate_body(body, schema)


class KlaviyoCore:
    """Auth, validation and dispatch for `/api/*`, plus the inspection API (holds the runtime config)."""

    def __init__(self, config: KlaviyoSandboxConfig, stats: SandboxStats) -> None:
        self.config, self.stats = config, stats
        self.state = AccountState(config.seed, config.strict_bulk)
        if config.example_lists:
            self.state.add_example_lists()
        self.filters = _load_filters()
        self.tasks: set[asyncio.Task[None]] = set()
        self.outer: RateLimitMiddleware | None = None

    @property
    def keys(self) -> dict[str, frozenset[str] | None]:
        return {self.config.api_key: self.config.scopes, **self.config.extra_keys}

    async def api(self, request: Request) -> Response:
        found = operations.match(request.method, request.url.path)
        if found is None:
            return errors_response(
                [
                    KlaviyoError(
                        404, "not_found", f"{request.method} {request.url.path} is not an operation of this API."
                    ).as_dict()
                ],
                404,
            )
        op, params = found
        try:
            granted = check_auth(request.headers.get("authorization"), self.keys)
            check_revision(request.headers.get("revision"))
            check_scopes(granted, op.scopes)
            body: Any = None
            if op.request_schema is not None:
                raw = await request.body()
                if len(raw) > LARGE_BODY:  # a 5 MB bulk body takes seconds to check: keep serving meanwhile
                    body, problems = await asyncio.to_thread(_parse_and_validate, raw, op.request_schema)
                else:
                    body, problems = _parse_and_validate(raw, op.request_schema)
                if problems:
                    self.stats.validation_failed(op.id)
                    return errors_response(problems, 400)
            handler = HANDLERS.get(op.id)
            if handler is None:
                raise KlaviyoError(405, "method_not_allowed", f"{op.id} is not emulated by the sandbox.")
            ctx = Ctx(
                request,
                self.state,
                params,
                body,
                self.filters.get(op.id),
                self.config.account_id,
                self.config.public_key,
                self.config.import_delay,
                self.tasks,
            )
            return await handler(ctx)
        except KlaviyoError as exc:
            if exc.status == 400:
                self.stats.validation_failed(op.id)
            return error_response(exc)

    # inspection ------------------------------------------------------------------------------------------
    async def summary(self, request: Request) -> Response:
        return JSONResponse(self.state.summary())

    async def profiles(self, request: Request) -> Response:
        from klaviyo_segment.devkit.sandbox.klaviyo.resources import profile_resource

        return JSONResponse([profile_resource(p, "", True) for p in self.state.profiles.values()])

    async def events(self, request: Request) -> Response:
        name = request.query_params.get("metric")
        out = []
        for event in self.state.events.values():
            metric = self.state.metrics[event.metric_id].name
            if name is None or name == metric:
                out.append(
                    {
                        "id": event.id,
                        "metric": metric,
                        "metric_id": event.metric_id,
                        "profile_id": event.profile_id,
                        "timestamp": event.timestamp,
                        "properties": event.properties,
                    }
                )
        return JSONResponse(out)

    async def lists(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"id": k.id, "name": k.name, "opt_in_process": k.opt_in_process, "members": list(k.members)}
                for k in self.state.lists.values()
            ]
        )

    async def stats_view(self, request: Request) -> Response:
        return JSONResponse(self.stats.snapshot())

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        if self.config.example_lists:
            self.state.add_example_lists()
        self.stats.reset()
        if self.outer is not None:
            self.outer.limiter.reset()
        return JSONResponse({"reset": True})

    async def configure(self, request: Request) -> Response:
        """Runtime switches: rate_limits, faults, strict_bulk, webhook_url, scopes, keys {pk_: [scopes]|null}."""
        try:
            body = strictjson.loads(await request.body() or b"{}")
            self.apply_config(body)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(
            {
                "rate_limits": self.config.rate_limits,
                "faults": self.config.faults,
                "strict_bulk": self.state.strict_bulk,
                "webhook_url": self.config.webhook_url,
            }
        )

    def apply_config(self, body: dict[str, Any]) -> None:
        if "rate_limits" in body:
            parse_mode(body["rate_limits"])
            self.config.rate_limits = body["rate_limits"]
            if self.outer is not None:
                self.outer.configure(body["rate_limits"])
        if "faults" in body:
            spec = faults_mod.parse_faults(body["faults"]) if body["faults"] else None
            self.config.faults = body["faults"]
            if self.outer is not None:
                self.outer.app.configure(spec, body.get("seed"))
        if "strict_bulk" in body:
            self.state.strict_bulk = self.config.strict_bulk = bool(body["strict_bulk"])
        if "webhook_url" in body:
            self.config.webhook_url = body["webhook_url"]
        if "scopes" in body:
            self.config.scopes = None if body["scopes"] is None else frozenset(body["scopes"])
        for key, scopes in (body.get("keys") or {}).items():
            if not str(key).startswith("pk_"):
                raise ValueError(f"API key {key!r} must start with pk_")
            self.config.extra_keys[key] = None if scopes is None else frozenset(scopes)

    async def engagement(self, request: Request) -> Response:
        """Store engagement events (Get Events returns them) and deliver them as one signed system webhook."""
        try:
            items = strictjson.loads(await request.body())["events"]
            records, ids = [], []
            for item in items:
                event, record = self._engage(item, request)
                ids.append(event.id)
                records.append(record)
        except (ValueError, KeyError, TypeError, KlaviyoError) as exc:
            return JSONResponse({"error": f"bad engagement request: {exc}"}, status_code=400)
        status = None
        if self.config.webhook_url and records:
            status = await emit_webhook(
                self.config.webhook_url,
                self.config.webhook_secret,
                self.config.webhook_id,
                self.config.account_id,
                records,
            )
        return JSONResponse({"event_ids": ids, "webhook_status": status})

    def _engage(self, item: dict[str, Any], request: Request) -> tuple[Any, dict[str, Any]]:
        from klaviyo_segment.devkit.sandbox.klaviyo.resources import api_base, event_resource

        metric = item["metric"]
        if metric not in ENGAGEMENT_TOPICS:
            raise ValueError(f"metric must be one of {sorted(ENGAGEMENT_TOPICS)}")
        if item.get("profile_id"):
            profile = self.state.get_profile(item["profile_id"])
        else:
            profile = self.state.resolve_event_profile({"attributes": {"email": item["email"]}})
        attrs: dict[str, Any] = {
            "properties": item.get("properties") or {},
            "time": item.get("datetime") or iso(now()),
            "unique_id": item.get("unique_id") or self.state.short_id(16),
        }
        datetime.fromisoformat(str(attrs["time"]).replace("Z", "+00:00"))
        event = self.state.add_event(profile, metric, attrs, integration="Klaviyo")
        if event is None:
            raise ValueError("duplicate engagement event")
        if metric in _SUPPRESSION_BY_METRIC:
            self.state.suppress(profile, _SUPPRESSION_BY_METRIC[metric])
        payload = event_resource(event, api_base(request))
        return event, {"external_id": event.id, "payload": payload, "topic": ENGAGEMENT_TOPICS[metric]}


def _load_filters() -> dict[str, Any]:
    from klaviyo_segment.constants import schema_path

    raw = json.loads(schema_path().read_text(encoding="utf-8"))
    return {op_id: spec.get("filters") for op_id, spec in raw["operations"].items()}


class _KlaviyoApp(Starlette):
    """Starlette whose stack is wrapped by the rate-limit and fault layers, built from the current config."""

    def build_middleware_stack(self) -> Any:
        core: KlaviyoCore = self.state.core
        spec = faults_mod.parse_faults(core.config.faults) if core.config.faults else None
        core.outer = wrap_app(
            super().build_middleware_stack(),
            stats=core.stats,
            rate_limits=core.config.rate_limits,
            faults=spec,
            seed=core.config.seed,
        )
        return core.outer


def create_app(config: KlaviyoSandboxConfig) -> Starlette:
    """The ASGI app; ``app.state.core`` gives tests direct access to state and runtime configuration."""
    parse_mode(config.rate_limits)
    if config.faults:
        faults_mod.parse_faults(config.faults)
    core = KlaviyoCore(config, SandboxStats())
    methods = ["GET", "POST", "PATCH", "DELETE", "PUT"]
    app = _KlaviyoApp(
        routes=[
            Route("/__sandbox", core.summary),
            Route("/__sandbox/state", core.summary),
            Route("/__sandbox/profiles", core.profiles),
            Route("/__sandbox/events", core.events),
            Route("/__sandbox/lists", core.lists),
            Route("/__sandbox/stats", core.stats_view),
            Route("/__sandbox/reset", core.reset, methods=["POST"]),
            Route("/__sandbox/config", core.configure, methods=["POST"]),
            Route("/__sandbox/engagement", core.engagement, methods=["POST"]),
            Route("/api/{rest:path}", core.api, methods=methods),
        ]
    )
    app.state.core = core
    return app
