"""drf-spectacular post-processing: the error answers every operation can give, in the error
format, and a summary for every operation (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]).

Which statuses: 400 anywhere (the input guard refuses NUL or bad numbers in any query string),
401 and 403 where a token is needed, 404 anywhere (ids, `user_id`, plan codes), 409 on writes
(conflicts, database constraints), 413 with a body, 429 everywhere (rate limits), 503 anywhere
(database or Stripe unavailable). docs/security.md.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string", "description": "A stable machine code, e.g. validation_error."},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "description": "Per field: a list of {code, message}.",
                    "additionalProperties": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        },
                    },
                },
            },
            "additionalProperties": True,
        }
    },
}

DESCRIPTIONS = {
    "402": "The card was declined (error.decline_code says why).",
    "400": "Invalid input (the error names the fields).",
    "401": "No valid credentials.",
    "403": "Not allowed for this caller.",
    "404": "No such resource (or not the caller's).",
    "409": "Conflicts with the current state.",
    "413": "The body is longer than the limit.",
    "429": "Rate limited; Retry-After says when to try again.",
    "503": "A dependency (database, Stripe) is unavailable; Retry-After says when to try again.",
}
_WRITES = {"post", "put", "patch", "delete"}
# Statuses only some operations give, by operationId.
_EXTRA = {"payments_create": ["402"]}


def _statuses(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    # 404 anywhere too: a `user_id` naming no user, a plan code that is not sold, an unknown id.
    wanted = ["400", "404", "429", "503"]
    if operation.get("security") != [{}] and {} not in operation.get("security", [{"auth": []}]):
        wanted += ["401", "403"]
    if method in _WRITES:
        wanted.append("409")
    if "requestBody" in operation:
        wanted.append("413")
    return wanted + _EXTRA.get(str(operation.get("operationId")), [])


INT64_MAX = 2**63 - 1
# Bounds the API enforces on parameters drf-spectacular cannot see through (user_id read by
# payments_project.api._subject, path ids, DRF's pagination, headers read by hand).
PARAMETER_BOUNDS: dict[str, dict[str, Any]] = {
    "user_id": {"minimum": 1, "maximum": INT64_MAX},
    "id": {"minimum": 1, "maximum": INT64_MAX},
    "page": {"minimum": 1, "maximum": INT64_MAX},
    "page_size": {"minimum": 1, "maximum": 200},  # larger is served as 200 (Pagination.max_page_size)
    "Idempotency-Key": {"maxLength": 200},
    "feature": {"maxLength": 64},
    "code": {"maxLength": 64},
    "country": {"pattern": "^[A-Za-z]{2}$"},
}
# Request body fields read as a plan's code (a slug of at most 64 characters).
PROPERTY_BOUNDS: dict[str, dict[str, Any]] = {"plan": {"maxLength": 64}}


def _bound_parameters(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        for key, value in PARAMETER_BOUNDS.get(parameter.get("name"), {}).items():
            if _applies(key, schema):
                schema.setdefault(key, value)
    body = operation.get("requestBody", {}).get("content", {})
    for content in body.values():
        ref = content.get("schema", {}).get("$ref", "")
        component = schemas.get(ref.rsplit("/", 1)[-1], {}) if ref else content.get("schema", {})
        for name, prop in component.get("properties", {}).items():
            for key, value in PROPERTY_BOUNDS.get(name, {}).items():
                if _applies(key, prop):
                    prop.setdefault(key, value)


def _applies(key: str, schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return (kind == "integer") if key in {"minimum", "maximum"} else (kind == "string")


def _summary(operation: dict[str, Any]) -> str:
    description = str(operation.get("description") or "").strip()
    if description:
        first = description.split(". ")[0].split("\n")[0].rstrip(".")
        return first if len(first) <= 100 else first[:97].rstrip() + "..."
    return str(operation.get("operationId", "")).replace("_", " ").capitalize()


def error_responses_hook(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for status in _statuses(path, method, operation):
                responses.setdefault(
                    status,
                    {"description": DESCRIPTIONS[status], "content": {"application/json": {"schema": ref}}},
                )
            operation.setdefault("summary", _summary(operation))
            _bound_parameters(operation, result["components"]["schemas"])
    return result
