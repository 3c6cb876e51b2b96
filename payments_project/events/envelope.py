"""The CloudEvents 1.0 JSON envelope of an event (structured mode), as published to Kafka and served
by the API: the same attributes in both, built from the row's immutable columns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from django.conf import settings

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class EventColumns(Protocol):
    """The immutable columns an envelope is built from: a DomainEvent row or the relay's claim."""

    @property
    def id(self) -> Any: ...
    @property
    def type(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    @property
    def aggregate_type(self) -> str: ...
    @property
    def aggregate_id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def actor_type(self) -> str: ...
    @property
    def actor_id(self) -> str: ...


def envelope_attributes(event: EventColumns) -> dict[str, Any]:
    """Every attribute but `data`. Extension attribute names are lowercase letters only, as the
    CloudEvents spec requires; `sequence` is a string, as its Sequence extension says."""
    return {
        "specversion": SPEC_VERSION,
        "id": str(event.id),
        "source": settings.EVENTS_SOURCE,
        "type": event.type,
        "subject": f"{event.aggregate_type}/{event.aggregate_id}",
        "time": rfc3339(event.occurred_at),
        "datacontenttype": "application/json",
        "schemaversion": event.schema_version,
        "aggregatetype": event.aggregate_type,
        "aggregateid": event.aggregate_id,
        "sequence": str(event.sequence),
        "actortype": event.actor_type,
        "actorid": event.actor_id,
    }


def envelope(attributes: Mapping[str, Any], payload: Any) -> dict[str, Any]:
    return {**attributes, "data": payload}


def envelope_bytes(attributes: Mapping[str, Any], payload_json: str | bytes) -> bytes:
    """The envelope as JSON bytes, with the payload's stored JSON text spliced in as `data`
    (the relay never decodes and re-encodes a payload)."""
    head = orjson.dumps(dict(attributes))
    data = payload_json.encode() if isinstance(payload_json, str) else payload_json
    return head[:-1] + b',"data":' + data + b"}"


def envelope_parse(value: bytes) -> dict[str, Any]:
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError("an envelope is a JSON object")
    return parsed
