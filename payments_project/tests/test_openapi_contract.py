"""The OpenAPI schema states what the API validates: every input string bounded (length, enum,
pattern or format), every input integer bounded, every operation summarised, and the error answers
documented in the error format."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def schema(db: None) -> dict[str, Any]:
    return APIClient().get("/api/v1/schema/?format=json").json()


def _unbounded(schema: dict[str, Any], components: dict[str, Any], where: str) -> list[str]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    found: list[str] = []
    for part in schema.get("allOf", []) + schema.get("oneOf", []):
        found += _unbounded(part, components, where)
    kind = schema.get("type")
    if kind == "string" and not {"maxLength", "enum", "pattern", "format"} & set(schema):
        found.append(f"{where}: string without a bound")
    if kind == "string" and schema.get("format") in {"email", "uri"} and "maxLength" not in schema:
        found.append(f"{where}: {schema['format']} without maxLength")
    if kind == "integer" and "maximum" not in schema:
        found.append(f"{where}: integer without a maximum")
    for name, prop in schema.get("properties", {}).items():
        if not prop.get("readOnly"):
            found += _unbounded(prop, components, f"{where}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _unbounded(schema["items"], components, f"{where}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _unbounded(schema["additionalProperties"], components, f"{where}{{}}")
    return found


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_input_is_bounded_in_the_schema(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    found: list[str] = []
    for path, method, operation in _operations(schema):
        for parameter in operation.get("parameters", []):
            found += _unbounded(
                parameter.get("schema", {}), components, f"{method} {path} {parameter['name']}"
            )
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            found += _unbounded(body["schema"], components, f"{method} {path} body")
    assert found == []


def test_every_operation_has_a_summary_and_documents_its_errors(schema: dict[str, Any]) -> None:
    missing: list[str] = []
    error = {"$ref": "#/components/schemas/Error"}
    for path, method, operation in _operations(schema):
        if not operation.get("summary"):
            missing.append(f"{method} {path}: summary")
        wanted = {"400", "429"} | ({"401", "403"} if {} not in operation.get("security", []) else set())
        wanted |= {"404"}
        wanted |= {"409"} if method != "get" else set()
        for status in sorted(wanted):
            answer = operation["responses"].get(status, {})
            if answer.get("content", {}).get("application/json", {}).get("schema") != error:
                missing.append(f"{method} {path}: {status}")
    assert len(_operations(schema)) >= 20
    assert missing == []
