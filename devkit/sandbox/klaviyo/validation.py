"""Request checks in Klaviyo's order (auth, revision, scopes, then body) and Klaviyo-shaped error answers.

Bodies are checked against the trimmed official schema, where every object with declared properties is
closed: the live API rejects unknown attributes ("'x' is not a valid field for the resource 'profile'.") even
though the published spec never says `additionalProperties: false`. A compiled check (fastcheck.py) accepts
valid bodies quickly; only a body it rejects goes through ``jsonschema``, whose errors make the response.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from starlette.responses import JSONResponse, Response

from klaviyo_segment.constants import JSONAPI_CONTENT_TYPE
from klaviyo_segment.devkit.sandbox import strictjson
from klaviyo_segment.devkit.sandbox.klaviyo import fastcheck

_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
_TITLES = {
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "Method not allowed.",
    409: "Conflict.",
    429: "Request was throttled.",
}


class KlaviyoError(Exception):
    """Raised by state and handlers; the app turns it into one JSON:API error response."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.pointer, self.parameter, self.meta, self.headers = pointer, parameter, meta or {}, headers or {}

    def as_dict(self) -> dict[str, Any]:
        return error_object(
            self.status, self.code, self.detail, pointer=self.pointer, parameter=self.parameter, meta=self.meta
        )


def error_object(
    status: int,
    code: str,
    detail: str,
    *,
    pointer: str | None = None,
    parameter: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    source: dict[str, str] = {}
    if pointer is not None:
        source["pointer"] = pointer
    if parameter is not None:
        source["parameter"] = parameter
    return {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": _TITLES.get(status, "Error."),
        "detail": detail,
        "source": source,
        "links": {},
        "meta": meta or {},
    }


def jsonapi(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(payload, status_code=status, media_type=JSONAPI_CONTENT_TYPE, headers=headers)


def errors_response(errors: list[dict[str, Any]], status: int, headers: dict[str, str] | None = None) -> Response:
    return jsonapi({"errors": errors}, status, headers)


def error_response(exc: KlaviyoError) -> Response:
    return errors_response([exc.as_dict()], exc.status, exc.headers)


def check_auth(header: str | None, keys: dict[str, frozenset[str] | None]) -> frozenset[str] | None:
    """Return the key's scope set (None = full access); 401 for a missing, malformed or unknown key."""
    if not header or not header.startswith("Klaviyo-API-Key "):
        raise KlaviyoError(
            401, "not_authenticated", "Missing or invalid authorization scheme. Please use Klaviyo-API-Key."
        )
    key = header[len("Klaviyo-API-Key ") :].strip()
    if not key.startswith("pk_") or key not in keys:
        raise KlaviyoError(401, "authentication_failed", "Incorrect authentication credentials.")
    return keys[key]


def check_revision(header: str | None) -> None:
    if not header:
        raise KlaviyoError(400, "invalid", "The 'revision' header is required.", parameter="revision")
    if not _REVISION.match(header):
        raise KlaviyoError(
            400, "invalid", f"'{header}' is not a valid revision. Expected YYYY-MM-DD[.suffix].", parameter="revision"
        )


def check_scopes(granted: frozenset[str] | None, required: list[str]) -> None:
    if granted is None:
        return
    missing = [scope for scope in required if scope not in granted]
    if missing:
        raise KlaviyoError(
            403,
            "permission_denied",
            f"You do not have permission to perform this action. Missing scopes: {', '.join(missing)}.",
        )


def parse_body(raw: bytes) -> Any:
    """The request's JSON; NaN, Infinity and overflowing numbers are not JSON, so they are a 400 as well."""
    try:
        return strictjson.loads(raw)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError and NonFiniteNumber are all ValueErrors
        raise KlaviyoError(400, "invalid", "Request body is not valid JSON.", pointer="/") from None


_VALIDATORS: dict[int, tuple[dict[str, Any], Draft202012Validator]] = {}


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """One compiled validator per schema object (operations are loaded once, so identity is a stable key)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, Draft202012Validator(schema, format_checker=FormatChecker()))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def validate_body(body: Any, schema: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Klaviyo-style error objects for every schema violation (empty list = valid).

    The compiled check answers for valid bodies; anything it rejects is validated again by ``jsonschema``,
    so the errors (and the verdict, should the two ever disagree) are the reference validator's."""
    if not schema:
        return []
    if fastcheck.accepts(body, schema):
        return []
    return validate_body_reference(body, schema)


def validate_body_reference(body: Any, schema: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``validate_body`` through ``jsonschema`` alone: the error source, and the baseline of the benchmark."""
    if not schema:
        return []
    validator = _validator(schema)
    errors = sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
    return [_to_error(body, err) for err in errors]


def _resource_type(body: Any, path: list[Any]) -> str:
    """The JSON:API `type` of the nearest enclosing resource, used in Klaviyo's "not a valid field" message."""
    found, node = "", body
    for step in [None, *path]:
        if step is not None:
            node = node[step]
        if isinstance(node, dict) and isinstance(node.get("type"), str):
            found = node["type"]
        elif (
            isinstance(node, dict) and isinstance(node.get("data"), dict) and isinstance(node["data"].get("type"), str)
        ):
            found = node["data"]["type"]
    return found


def _to_error(body: Any, err: ValidationError) -> dict[str, Any]:
    path = list(err.absolute_path)
    pointer = "/" + "/".join(str(p) for p in path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        declared = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in declared)[0]
        resource = _resource_type(body, path)
        return error_object(
            400,
            "invalid",
            f"'{extra}' is not a valid field for the resource '{resource}'.",
            pointer=pointer.rstrip("/") + "/" + extra,
        )
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else ""
        return error_object(400, "invalid", err.message, pointer=pointer.rstrip("/") + "/" + missing)
    return error_object(400, "invalid", err.message, pointer=pointer)
