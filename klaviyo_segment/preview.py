"""Dry-run support: the flows run their real code against a recording transport that answers like Klaviyo
and Segment would on success, without any network. Ids that only a lookup could reveal come back as
placeholders such as ``{profile:email=a@b.com}``, so the printed requests read like a plan.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

_ANY = re.compile(r"^any\((\w+),\[(.*)\]\)$")
_EQUALS = re.compile(r'^equals\((\w+),"(.*)"\)$')


def _values(raw: str) -> list[str]:
    try:
        return [str(v) for v in json.loads(f"[{raw}]")]
    except ValueError:
        return [v.strip().strip('"') for v in raw.split(",") if v.strip()]


from klaviyo_segment.placeholders import is_placeholder, placeholder  # noqa: E402,F401  (public here too)


def _profile_id(attributes: dict[str, Any]) -> str:
    for field in ("email", "phone_number", "external_id"):
        if attributes.get(field):
            return placeholder("profile", field, attributes[field])
    return placeholder("profile", "new", "?")


class Recorder:
    """Collects every request in order and answers it as a successful API would."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._counter = 0

    def lines(self) -> list[dict[str, Any]]:
        return list(self.requests)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        line: dict[str, Any] = {"method": request.method, "path": request.url.raw_path.decode("ascii")}
        body = json.loads(request.content) if request.content else None
        if request.method != "GET" and body is not None:
            line["body"] = body
        self.requests.append(line)
        return self._answer(request, body)

    def _answer(self, request: httpx.Request, body: Any) -> httpx.Response:
        path = urlsplit(str(request.url)).path.rstrip("/")
        query = parse_qs(urlsplit(str(request.url)).query)
        method = request.method
        jsonapi = {"content-type": "application/vnd.api+json"}
        if path.startswith("/v1/"):
            return httpx.Response(200, json={"success": True})
        if method == "GET" and path == "/api/profiles":
            return httpx.Response(200, headers=jsonapi, json={"data": self._profiles(query), "links": {}})
        if method == "POST" and path in ("/api/profile-import", "/api/profiles"):
            attributes = (body or {}).get("data", {}).get("attributes", {})
            pid = (body or {}).get("data", {}).get("id") or _profile_id(attributes)
            return httpx.Response(
                201, headers=jsonapi, json={"data": {"type": "profile", "id": pid, "attributes": attributes}}
            )
        if path.startswith("/api/profile-bulk-import-jobs"):
            return self._bulk_job(method, path)
        if method == "GET" and path == "/api/lists":
            return httpx.Response(200, headers=jsonapi, json={"data": [], "links": {}})
        if method == "POST" and path == "/api/lists":
            name = (body or {}).get("data", {}).get("attributes", {}).get("name", "?")
            return httpx.Response(
                201,
                headers=jsonapi,
                json={"data": {"type": "list", "id": placeholder("list", "name", name), "attributes": {"name": name}}},
            )
        if method == "GET" and path == "/api/metrics":
            names = [
                "Received Email",
                "Opened Email",
                "Clicked Email",
                "Bounced Email",
                "Unsubscribed",
                "Marked Email as Spam",
            ]
            return httpx.Response(
                200,
                headers=jsonapi,
                json={
                    "data": [
                        {"type": "metric", "id": placeholder("metric", "name", n), "attributes": {"name": n}}
                        for n in names
                    ],
                    "links": {},
                },
            )
        if method == "GET":
            return httpx.Response(200, headers=jsonapi, json={"data": [], "links": {}})
        if "/relationships/" in path:
            return httpx.Response(204)
        return httpx.Response(202)

    def _profiles(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        expr = (query.get("filter") or [""])[0]
        match = _ANY.match(expr)
        if match:
            field, values = match.group(1), _values(match.group(2))
        else:
            eq = _EQUALS.match(expr)
            if not eq:
                return []
            field, values = eq.group(1), [eq.group(2)]
        out = []
        for value in values:
            pid = value if field == "id" else placeholder("profile", field, value)
            attributes: dict[str, Any] = {} if field == "id" else {field: value}
            attributes["subscriptions"] = {"email": {"marketing": {"consent": "NEVER_SUBSCRIBED"}}}
            if field == "id":  # a lookup by id cannot reveal the external_id: show where it would go
                attributes["external_id"] = placeholder("profile.external_id", "id", value)
            out.append({"type": "profile", "id": pid, "attributes": attributes})
        return out

    def _bulk_job(self, method: str, path: str) -> httpx.Response:
        jsonapi = {"content-type": "application/vnd.api+json"}
        if method == "POST":
            self._counter += 1
            job = {
                "type": "profile-bulk-import-job",
                "id": f"{{job:{self._counter}}}",
                "attributes": {"status": "queued"},
            }
            return httpx.Response(202, headers=jsonapi, json={"data": job})
        if path.endswith("/import-errors"):
            return httpx.Response(200, headers=jsonapi, json={"data": [], "links": {}})
        job_id = path.rsplit("/", 1)[-1]
        return httpx.Response(
            200,
            headers=jsonapi,
            json={
                "data": {
                    "type": "profile-bulk-import-job",
                    "id": job_id,
                    "attributes": {"status": "complete", "total_count": 0, "completed_count": 0, "failed_count": 0},
                }
            },
        )


class NoPacer:
    """Preview sends nothing, so it must not wait for rate-limit windows."""

    async def acquire(self, operation_id: str) -> None:
        return None

    def observe(self, operation_id: str, response: httpx.Response) -> None:
        return None


async def preview_flow(
    flow: str, messages: list[Any], config: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``flow``'s steps on ``messages`` against the recorder. Returns (request lines, summary)."""
    from klaviyo_segment import runtime
    from klaviyo_segment.flows import get_spec

    spec = get_spec(flow)
    recorder = Recorder()
    async with httpx.AsyncClient(base_url="https://a.klaviyo.com", transport=recorder.transport()) as http:
        async with runtime.open_env(
            flow,
            config,
            preview=True,
            http=http,
            pacer=NoPacer(),
            segment=spec.sends_to_segment,
            segment_transport=recorder.transport(),
        ) as env:
            summary = await runtime.process_spec(env, spec, messages)
    return recorder.lines(), summary
