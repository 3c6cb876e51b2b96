"""The event catalog in code: every event type, its schema version and its payload's JSON Schema.

Domain apps declare their types in `<app>/events.py` with `event_type(...)`, built from the small
schema helpers below, so the schema is next to the code that fills the payload; `manage.py
events_catalog` writes docs/events.md and docs/events/*.json from this registry, and a test fails
when those files are stale or when an emitted payload does not match its schema.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Kafka keys and the admin search use the aggregate type and id; both are bounded by the columns.
AGGREGATE_TYPE_MAX = 64
AGGREGATE_ID_MAX = 255

Schema = dict[str, Any]


class EventPayloadInvalid(Exception):
    """A payload does not match its type's schema: a programming error, never a user's."""


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per type
class EventType:
    name: str
    version: int
    aggregate: str
    description: str
    properties: Mapping[str, Schema] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()

    @property
    def schema_id(self) -> str:
        return f"urn:payments-back-office:event:{self.name}:v{self.version}"

    def schema(self) -> Schema:
        return {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": self.schema_id,
            "title": self.name,
            "description": self.description,
            "type": "object",
            "properties": dict(self.properties),
            "required": sorted(set(self.properties) - self.optional),
            "additionalProperties": False,
        }

    def validate(self, payload: Mapping[str, Any]) -> None:
        errors = sorted(_validator(self).iter_errors(payload), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(payload)"
            raise EventPayloadInvalid(f"{self.name} v{self.version}: {where}: {errors[0].message}")


_REGISTRY: dict[str, EventType] = {}


def event_type(
    *,
    name: str,
    version: int = 1,
    aggregate: str,
    description: str,
    properties: Mapping[str, Schema],
    optional: tuple[str, ...] = (),
) -> EventType:
    """Declare (and register) an event type; a name can be declared once."""
    if name in _REGISTRY:
        raise ValueError(f"event type {name!r} is declared twice")
    if len(aggregate) > AGGREGATE_TYPE_MAX:
        raise ValueError(f"aggregate type {aggregate!r} is longer than {AGGREGATE_TYPE_MAX}")
    declared = EventType(
        name=name,
        version=version,
        aggregate=aggregate,
        description=description,
        properties=dict(properties),
        optional=frozenset(optional),
    )
    _REGISTRY[name] = declared
    return declared


def event_types() -> list[EventType]:
    """Every declared type, by name."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def event_type_get(name: str) -> EventType | None:
    return _REGISTRY.get(name)


@functools.cache
def _validator(declared: EventType) -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(declared.schema(), format_checker=FormatChecker())


# --- schema helpers: what payload fields may be -----------------------------------------------
def _nullable(schema: Schema, nullable: bool) -> Schema:
    if nullable:
        schema = {**schema, "type": [schema["type"], "null"]}
    return schema


def string(
    description: str, *, max_length: int | None = None, enum: list[str] | None = None, nullable: bool = False
) -> Schema:
    schema: Schema = {"type": "string", "description": description}
    if max_length is not None:
        schema["maxLength"] = max_length
    if enum is not None:
        schema["enum"] = [*enum, None] if nullable else list(enum)
    return _nullable(schema, nullable)


def integer(description: str, *, minimum: int | None = 0, nullable: bool = False) -> Schema:
    schema: Schema = {"type": "integer", "description": description}
    if minimum is not None:
        schema["minimum"] = minimum
    return _nullable(schema, nullable)


def boolean(description: str) -> Schema:
    return {"type": "boolean", "description": description}


def timestamp(description: str, *, nullable: bool = False) -> Schema:
    """An aware UTC time in RFC 3339, e.g. 2026-11-29T10:00:00.000000Z."""
    return _nullable({"type": "string", "format": "date-time", "description": description}, nullable)


def amount(description: str, *, nullable: bool = False) -> Schema:
    """Money is an integer count of minor units beside an ISO 4217 `currency` field."""
    return integer(f"{description} (minor units of `currency`)", minimum=0, nullable=nullable)


def currency(description: str = "ISO 4217 code", *, nullable: bool = False) -> Schema:
    schema: Schema = {"type": "string", "pattern": "^[A-Z]{3}$", "description": description}
    return _nullable(schema, nullable)


def array(description: str, items: Schema) -> Schema:
    return {"type": "array", "description": description, "items": items}


def record(description: str, properties: Mapping[str, Schema], *, nullable: bool = False) -> Schema:
    schema: Schema = {
        "type": "object",
        "description": description,
        "properties": dict(properties),
        "required": sorted(properties),
        "additionalProperties": False,
    }
    return _nullable(schema, nullable)
