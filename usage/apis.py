"""Usage over the API: record events (one or a batch), reservations, the current period, history."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from entitlements.periods import EPOCH
from payments_project.accounts.selectors import can_act_for_any_user
from payments_project.api import (
    FastJSONRenderer,
    JSONIntegerField,
    Pagination,
    WholeNumberField,
    is_printable,
    printable,
    subject_user,
    subject_user_for_read,
    subject_user_ids,
)
from payments_project.errors import DomainError
from payments_project.security import INT64_MAX, BoundedJSONParser
from usage.models import FEATURE_CODE_MAX, IDEMPOTENCY_KEY_MAX, RESOURCE_FIELD_MAX, UsageRecord
from usage.selectors import usage_history, usage_summary
from usage.services import (
    MAX_BATCH,
    MAX_QUANTITY,
    REFUSAL_MESSAGES,
    EventResult,
    UsageEvent,
    usage_event_record,
    usage_events_record,
    usage_reservation_create,
    usage_reservation_release,
    usage_reservation_settle,
)

METADATA_MAX_BYTES = 4096
METADATA_MAX_KEYS = 32


class MetadataField(serializers.DictField):
    """A flat JSON object of at most METADATA_MAX_KEYS short keys, METADATA_MAX_BYTES in all."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        import orjson

        if len(value) > METADATA_MAX_KEYS:
            raise serializers.ValidationError(f"At most {METADATA_MAX_KEYS} keys.")
        try:
            encoded = orjson.dumps(value)
        except TypeError as exc:  # pragma: no cover - parsed JSON always encodes
            raise serializers.ValidationError("Not JSON.") from exc
        if len(encoded) > METADATA_MAX_BYTES:
            raise serializers.ValidationError(f"At most {METADATA_MAX_BYTES} bytes of JSON.")
        if "\\u0000" in encoded.decode() or any(len(str(key)) > 64 for key in value):
            raise serializers.ValidationError("Keys of at most 64 characters, no NUL characters.")
        return value


# An opaque key is kept as sent: DRF's CharField trims by default, which made " job" and "job" one key.
_KEY_HELP = "Kept exactly as sent (spaces included); the same key replays, another body is 409."


class EventInputSerializer(serializers.Serializer):
    feature = serializers.CharField(
        max_length=FEATURE_CODE_MAX, validators=[printable], trim_whitespace=False
    )
    idempotency_key = serializers.CharField(
        max_length=IDEMPOTENCY_KEY_MAX, validators=[printable], trim_whitespace=False, help_text=_KEY_HELP
    )
    quantity = JSONIntegerField(min_value=1, max_value=MAX_QUANTITY, default=1)
    resource_type = serializers.CharField(
        max_length=RESOURCE_FIELD_MAX, required=False, default="", allow_blank=True, validators=[printable]
    )
    resource_size = JSONIntegerField(min_value=0, max_value=INT64_MAX, required=False, default=0)
    operation = serializers.CharField(
        max_length=RESOURCE_FIELD_MAX, required=False, default="", allow_blank=True, validators=[printable]
    )
    metadata = MetadataField(required=False, default=dict)
    occurred_at = serializers.DateTimeField(required=False, help_text="Default: now.")
    user_id = JSONIntegerField(
        required=False,
        min_value=1,
        max_value=INT64_MAX,
        help_text="Service accounts and superusers: another user.",
    )


class BatchInputSerializer(serializers.Serializer):
    events = EventInputSerializer(many=True, allow_empty=False, max_length=MAX_BATCH)  # type: ignore[call-arg]


class EventResultSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["recorded", "duplicate", "refused"])
    code = serializers.ChoiceField(choices=sorted(REFUSAL_MESSAGES), allow_null=True)
    message = serializers.CharField()
    record_id = serializers.IntegerField(allow_null=True)
    quantity = serializers.IntegerField(allow_null=True)
    over_limit = serializers.BooleanField()
    # In UTC whatever time zone a request might activate: the hot path writes the same (_DATETIME).
    period_start = serializers.DateTimeField(allow_null=True, default_timezone=UTC)
    limit = serializers.IntegerField(allow_null=True)
    used = serializers.IntegerField(allow_null=True)
    remaining = serializers.IntegerField(allow_null=True)
    resets_at = serializers.DateTimeField(allow_null=True, default_timezone=UTC)


class BatchOutputSerializer(serializers.Serializer):
    results = EventResultSerializer(many=True)


class SummaryQuerySerializer(serializers.Serializer):
    feature = serializers.CharField(
        max_length=FEATURE_CODE_MAX, validators=[printable], trim_whitespace=False
    )
    user_id = WholeNumberField(required=False, min_value=1, max_value=INT64_MAX)


class SummarySerializer(serializers.Serializer):
    feature = serializers.CharField()
    subject = serializers.CharField(help_text="u<user id>, or f<family id> for a family pool.")
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True, help_text="When the counter resets (resets_at).")
    limit = serializers.IntegerField(allow_null=True)
    used = serializers.IntegerField()
    reserved = serializers.IntegerField()
    remaining = serializers.IntegerField(allow_null=True)
    policy = serializers.CharField()


class HistoryQuerySerializer(serializers.Serializer):
    feature = serializers.CharField(
        max_length=FEATURE_CODE_MAX, required=False, validators=[printable], trim_whitespace=False
    )
    operation = serializers.CharField(max_length=RESOURCE_FIELD_MAX, required=False, validators=[printable])
    resource_type = serializers.CharField(
        max_length=RESOURCE_FIELD_MAX, required=False, validators=[printable]
    )
    occurred_after = serializers.DateTimeField(required=False)
    occurred_before = serializers.DateTimeField(required=False)
    user_id = WholeNumberField(required=False, min_value=1, max_value=INT64_MAX)


class _PeriodStartField(serializers.DateTimeField):
    """A record's period start, null for a limit that never resets (its one period is keyed by
    the epoch), as event results and the summary show it."""

    def to_representation(self, value: Any) -> Any:
        return None if value == EPOCH else super().to_representation(value)


class RecordSerializer(serializers.ModelSerializer):
    feature = serializers.CharField(source="feature_code")
    period_start = _PeriodStartField(read_only=True, allow_null=True)

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "user_id",
            "family_id",
            "feature",
            "quantity",
            "resource_type",
            "resource_size",
            "operation",
            "idempotency_key",
            "metadata",
            "occurred_at",
            "recorded_at",
            "period_start",
            "over_limit",
        ]


class ReserveInputSerializer(serializers.Serializer):
    feature = serializers.CharField(
        max_length=FEATURE_CODE_MAX, validators=[printable], trim_whitespace=False
    )
    quantity = JSONIntegerField(min_value=1, max_value=MAX_QUANTITY)
    idempotency_key = serializers.CharField(
        max_length=IDEMPOTENCY_KEY_MAX, validators=[printable], trim_whitespace=False, help_text=_KEY_HELP
    )
    ttl_seconds = JSONIntegerField(min_value=1, max_value=86400, required=False)
    user_id = JSONIntegerField(required=False, min_value=1, max_value=INT64_MAX)


class SettleInputSerializer(serializers.Serializer):
    quantity = JSONIntegerField(min_value=0, max_value=MAX_QUANTITY)


class ReservationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    feature = serializers.CharField(source="feature_code")
    quantity = serializers.IntegerField()
    settled_quantity = serializers.IntegerField(allow_null=True)
    status = serializers.CharField()
    expires_at = serializers.DateTimeField()


_EVENT_FIELDS = frozenset(EventInputSerializer().fields)
_TEXT_LIMITS = {
    "feature": (FEATURE_CODE_MAX, False),
    "idempotency_key": (IDEMPOTENCY_KEY_MAX, False),
    "resource_type": (RESOURCE_FIELD_MAX, True),
    "operation": (RESOURCE_FIELD_MAX, True),
}


def _plain_text(value: Any, max_length: int, blank: bool) -> bool:
    return (
        type(value) is str
        and (blank or value != "")
        and len(value) <= max_length
        and value == value.strip()
        and is_printable(value)
    )


def _plain_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def fast_event(data: Any) -> dict[str, Any] | None:
    """One event as EventInputSerializer would validate it, for the common input DRF would take
    unchanged (the single-event hot path, usage.hotpath); None: anything else."""
    items = _fast_events({"events": [data]})
    return None if items is None else items[0]


def event_answer(item: dict[str, Any], user_id: int) -> tuple[int, dict[str, Any]]:
    """Record one validated event for the user: (status, body) of the answer, 201 recorded or 200
    a replay; a refusal raises (429 quota_exceeded, 409 idempotency_key_reused...)."""
    result = usage_event_record(event=_event(item, user_id))
    code = status.HTTP_201_CREATED if result.status == "recorded" else status.HTTP_200_OK
    return code, _results_json([result])[0]


def _fast_events(data: Any) -> list[dict[str, Any]] | None:
    """The batch's events as BatchInputSerializer would validate them, for the common input DRF
    would take unchanged (about ten times faster on 1,000 events); None: anything else (including
    every error), which the serializer then answers."""
    if type(data) is not dict or type(data.get("events")) is not list:
        return None
    items = data["events"]
    if not 0 < len(items) <= MAX_BATCH:
        return None
    out = []
    metadata_field = MetadataField()
    for item in items:
        if type(item) is not dict or not _EVENT_FIELDS.issuperset(item):
            return None
        for name, (max_length, blank) in _TEXT_LIMITS.items():
            if (name in item or not blank) and not _plain_text(item.get(name), max_length, blank):
                return None
        if "quantity" in item and not _plain_int(item["quantity"], 1, MAX_QUANTITY):
            return None
        if "resource_size" in item and not _plain_int(item["resource_size"], 0, INT64_MAX):
            return None
        if "user_id" in item and not _plain_int(item["user_id"], 1, INT64_MAX):
            return None
        if "occurred_at" in item:
            return None  # parsed by DRF's DateTimeField
        metadata = item.get("metadata", {})
        if metadata:
            try:
                metadata = metadata_field.run_validation(metadata)
            except serializers.ValidationError:
                return None
        elif type(metadata) is not dict:
            return None
        out.append(
            {
                "feature": item["feature"],
                "idempotency_key": item["idempotency_key"],
                "quantity": item.get("quantity", 1),
                "resource_type": item.get("resource_type", ""),
                "resource_size": item.get("resource_size", 0),
                "operation": item.get("operation", ""),
                "metadata": metadata,
                **({"user_id": item["user_id"]} if "user_id" in item else {}),
            }
        )
    return out


def _owner_filter(request: Request) -> int | None:
    """Whose reservations the caller may close: their own, or anyone's for service accounts."""
    return None if can_act_for_any_user(request.user) else request.user.pk


def _event(data: dict[str, Any], user_id: int) -> UsageEvent:
    return UsageEvent(
        user_id=user_id,
        feature=data["feature"],
        idempotency_key=data["idempotency_key"],
        quantity=data["quantity"],
        resource_type=data["resource_type"],
        resource_size=data["resource_size"],
        operation=data["operation"],
        metadata=data["metadata"],
        occurred_at=data.get("occurred_at"),
    )


def _result(result: EventResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "code": result.code,
        "message": result.message,
        "record_id": result.record_id,
        "quantity": result.quantity,
        "over_limit": result.over_limit,
        "period_start": result.period_start,
        "limit": result.limit,
        "used": result.used,
        "remaining": result.remaining,
        "resets_at": result.resets_at,
    }


# In UTC, as EventResultSerializer's fields write them, without looking the current time zone up
# for each value.
_DATETIME = serializers.DateTimeField(default_timezone=UTC)


@functools.lru_cache(maxsize=4096)
def _datetime_text(value: datetime) -> str:
    # Period bounds are few and shared by many subjects: a warm single event formatted two of them
    # per answer through DRF's field, 4% of its CPU. Equal instants give equal text (in UTC).
    return str(_DATETIME.to_representation(value))


def _results_json(results: list[EventResult]) -> list[dict[str, Any]]:
    """EventResultSerializer's output (the schema), built directly: a batch answers 1,000 of them,
    whose period bounds are a handful of datetimes, each formatted once."""
    out = []
    for result in results:
        item = _result(result)
        for name in ("period_start", "resets_at"):
            value = item[name]
            if value is not None:
                item[name] = _datetime_text(value)
        out.append(item)
    return out


class UsageViewSet(viewsets.GenericViewSet):
    """Usage of metered and limit features. Customers record and read their own; service accounts
    and superusers may record for any `user_id`; support and finance may read anyone's."""

    ratelimit_scope = "usage"
    pagination_class = Pagination
    # JSON only: a form has no way to carry `metadata` (it was silently dropped) or typed numbers.
    parser_classes = [BoundedJSONParser]
    serializer_class = RecordSerializer

    @extend_schema(
        # From the serializer that validates them, so the schema states their bounds.
        parameters=[HistoryQuerySerializer],
        responses=RecordSerializer(many=True),
        description="Recorded events, newest first, paginated (`page`, `page_size` up to 200).",
    )
    def list(self, request: Request) -> Response:
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = subject_user_for_read(request, query.validated_data.get("user_id"))
        records = usage_history(
            user_id=user.pk,
            feature_code=query.validated_data.get("feature"),
            occurred_after=query.validated_data.get("occurred_after"),
            occurred_before=query.validated_data.get("occurred_before"),
            operation=query.validated_data.get("operation"),
            resource_type=query.validated_data.get("resource_type"),
        )
        page = self.paginate_queryset(records)
        return self.get_paginated_response(RecordSerializer(page, many=True).data)

    @extend_schema(
        request=EventInputSerializer,
        responses={201: EventResultSerializer, 200: EventResultSerializer},
        description="Record one event. 201 recorded; 200 a replay of the same key and body; 429 "
        "`quota_exceeded` (limit, used, remaining, resets_at); 409 `idempotency_key_reused`.",
    )
    @action(detail=False, methods=["post"], url_path="events")
    def events(self, request: Request) -> Response:
        data = EventInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = subject_user(request, data.validated_data.get("user_id"))
        code, body = event_answer(data.validated_data, user.pk)
        return Response(body, status=code)

    @extend_schema(
        request=BatchInputSerializer,
        responses=BatchOutputSerializer,
        description=f"Up to {MAX_BATCH} events, each answered on its own (recorded, duplicate, refused "
        "with a code); a refused one loses none of the others.",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="batch",
        # 1,000 results: written by orjson (the same bytes as DRF's renderer, ten times faster).
        renderer_classes=[FastJSONRenderer, BrowsableAPIRenderer],
    )
    def batch(self, request: Request) -> Response:
        items = _fast_events(request.data)
        if items is None:
            data = BatchInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            items = data.validated_data["events"]
        users = subject_user_ids(request, {item.get("user_id") for item in items})
        events = [_event(item, users[item.get("user_id")]) for item in items]
        results = usage_events_record(events=events)
        return Response({"results": _results_json(results)})

    @extend_schema(
        parameters=[OpenApiParameter("feature", str, required=True), OpenApiParameter("user_id", int)],
        responses=SummarySerializer,
        description="The current period's limit, used, reserved and remaining units of one feature.",
    )
    @action(detail=False, methods=["get"], url_path="summary")
    def summary(self, request: Request) -> Response:
        query = SummaryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = subject_user_for_read(request, query.validated_data.get("user_id"))
        summary = usage_summary(
            user_id=user.pk, feature_code=query.validated_data["feature"], at=timezone.now()
        )
        if isinstance(summary, str):
            raise DomainError(
                REFUSAL_MESSAGES[summary], code=summary, status_code=403 if summary == "not_entitled" else 404
            )
        return Response(SummarySerializer(summary).data)

    @extend_schema(
        request=ReserveInputSerializer,
        responses={201: ReservationSerializer, 200: ReservationSerializer},
        description="Hold units for a long operation (counted against the quota); settle or release "
        "it, or it expires after its TTL.",
    )
    @action(detail=False, methods=["post"], url_path="reservations")
    def reserve(self, request: Request) -> Response:
        data = ReserveInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = subject_user(request, data.validated_data.get("user_id"))
        reservation, created = usage_reservation_create(
            user_id=user.pk,
            feature=data.validated_data["feature"],
            quantity=data.validated_data["quantity"],
            idempotency_key=data.validated_data["idempotency_key"],
            ttl_seconds=data.validated_data.get("ttl_seconds"),
        )
        # A retry with the same key answers the same hold, as a replayed event answers: 200.
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(ReservationSerializer(reservation).data, status=code)

    @extend_schema(request=SettleInputSerializer, responses=ReservationSerializer)
    @action(detail=False, methods=["post"], url_path=r"reservations/(?P<reservation_id>[0-9]{1,18})/settle")
    def settle(self, request: Request, reservation_id: str) -> Response:
        data = SettleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reservation = usage_reservation_settle(
            reservation_id=int(reservation_id),
            quantity=data.validated_data["quantity"],
            user_id=_owner_filter(request),
        )
        return Response(ReservationSerializer(reservation).data)

    @extend_schema(request=None, responses=ReservationSerializer)
    @action(detail=False, methods=["post"], url_path=r"reservations/(?P<reservation_id>[0-9]{1,18})/release")
    def release(self, request: Request, reservation_id: str) -> Response:
        reservation = usage_reservation_release(
            reservation_id=int(reservation_id), user_id=_owner_filter(request)
        )
        return Response(ReservationSerializer(reservation).data)
