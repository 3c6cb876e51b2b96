"""GET /api/v1/events/: the outbox as a cursor feed, for consumers that cannot read Kafka."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments_project.accounts.selectors import can_act_for_any_user
from payments_project.api import WholeNumberField
from payments_project.events.selectors import event_envelope, events_feed

FEED_MAX_LIMIT = 500


class MayReadEvents(permissions.BasePermission):
    """Service accounts and staff holding accounts.act_for_any_user: the feed names every customer."""

    message = "Only service accounts and staff allowed to act for any user may read the events."

    def has_permission(self, request: Request, view: Any) -> bool:
        return can_act_for_any_user(request.user)


class FeedQuerySerializer(serializers.Serializer):
    after = serializers.UUIDField(required=False, help_text="The last event id already read.")
    limit = WholeNumberField(required=False, min_value=1, max_value=FEED_MAX_LIMIT, default=100)
    type = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        max_length=50,
        help_text="Only these types.",
    )


class EnvelopeSerializer(serializers.Serializer):
    """A CloudEvents 1.0 envelope, as on the Kafka topic (docs/events/envelope.json)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # Built here: "source" and "data" are names DRF's Serializer already uses as attributes.
        text = serializers.CharField
        return {
            "specversion": text(),
            "id": serializers.UUIDField(),
            "source": text(),
            "type": text(),
            "subject": text(),
            "time": text(help_text="RFC 3339, UTC"),
            "datacontenttype": text(),
            "schemaversion": serializers.IntegerField(),
            "aggregatetype": text(),
            "aggregateid": text(),
            "sequence": text(help_text="1, 2, 3... per aggregate"),
            "actortype": text(),
            "actorid": text(allow_blank=True),
            "data": serializers.DictField(help_text="The payload: docs/events.md"),
        }


class FeedOutputSerializer(serializers.Serializer):
    results = EnvelopeSerializer(many=True)
    next_after = serializers.UUIDField(allow_null=True, help_text="Pass as `after` for the next page.")
    has_more = serializers.BooleanField()


class EventFeedView(APIView):
    """Events in id (time) order after `after`; follow `next_after`. Events younger than a couple of
    seconds wait until no earlier transaction can still commit one before them."""

    permission_classes = [permissions.IsAuthenticated, MayReadEvents]
    ratelimit_scope = "default"

    @extend_schema(parameters=[FeedQuerySerializer], responses=FeedOutputSerializer)
    def get(self, request: Request) -> Response:
        query = FeedQuerySerializer(
            data={**request.query_params.dict(), "type": request.query_params.getlist("type")}
        )
        query.is_valid(raise_exception=True)
        after = query.validated_data.get("after")
        limit = query.validated_data["limit"]
        rows = events_feed(after=after, limit=limit + 1, types=query.validated_data.get("type") or None)
        page = rows[:limit]
        data = {
            "results": [event_envelope(row) for row in page],
            "next_after": page[-1].id if page else after,
            "has_more": len(rows) > limit,
        }
        return Response(FeedOutputSerializer(data).data)
