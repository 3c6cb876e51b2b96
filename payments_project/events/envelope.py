"""The CloudEvents 1.0 JSON envelope of an event (structured mode), as published to Kafka and served
by the API: the same attributes in both, built from the row's immutable columns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def envelope_attributes(
    *,
    event_id: str,
    type: str,
    schema_version: int,
    aggregate_type: str,
    aggregate_id: str,
    sequence: int,
    occurred_at: datetime,
    actor_type: str,
    actor_id: str,
) -> dict[str, Any]:
    """Every attribute but `data`. Extension attribute names are lowercase letters only, as the
    CloudEvents spec requires; `sequence` is a string, as its Sequence extension says."""
    return {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": settings.EVENTS_SOURCE,
        "type": type,
        "subject": f"{aggregate_type}/{aggregate_id}",
        "time": rfc3339(occurred_at),
        "datacontenttype": "application/json",
        "schemaversion": schema_version,
        "aggregatetype": aggregate_type,
        "aggregateid": aggregate_id,
        "sequence": str(sequence),
        "actortype": actor_type,
        "actorid": actor_id,
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
