"""Entitlement checks (the hot path) and family management.

The check views build plain dicts in the selector: no serializer per item, no N+1, no Stripe call.
The output serializers below document the responses (OpenAPI); they are not run per request.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from entitlements.selectors import entitlement_check, entitlement_list
from payments_project.api import subject_user

MAX_BULK_FEATURES = 200
REASONS = [
    "granted",
    "not_in_plan",
    "expired",
    "suspended",
    "quota_exhausted",
    "no_subscription",
    "unknown_feature",
]


class CheckQuerySerializer(serializers.Serializer):
    feature = serializers.CharField(max_length=64)
    user_id = serializers.CharField(required=False)


class BulkCheckInputSerializer(serializers.Serializer):
    features = serializers.ListField(
        child=serializers.CharField(max_length=64), allow_empty=False, max_length=MAX_BULK_FEATURES
    )
    user_id = serializers.IntegerField(required=False)


class CheckOutputSerializer(serializers.Serializer):
    feature = serializers.CharField()
    allowed = serializers.BooleanField()
    reason = serializers.ChoiceField(choices=REASONS)
    source = serializers.ChoiceField(choices=["own", "family", "one_time"], allow_null=True)  # type: ignore[assignment]
    plan = serializers.CharField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    limit = serializers.IntegerField(allow_null=True)
    used = serializers.IntegerField(allow_null=True)
    remaining = serializers.IntegerField(allow_null=True)


class BulkCheckOutputSerializer(serializers.Serializer):
    results = CheckOutputSerializer(many=True)


class EntitlementViewSet(viewsets.ViewSet):
    """What the caller (or, for staff and service accounts, `user_id`) may use."""

    ratelimit_scope = "entitlements"
    renderer_classes = [JSONRenderer]  # the hot path skips content negotiation with the browsable API

    @extend_schema(
        parameters=[OpenApiParameter("user_id", int, required=False)],
        responses=CheckOutputSerializer(many=True),
    )
    def list(self, request: Request) -> Response:
        user = subject_user(request, request.query_params.get("user_id"))
        return Response(entitlement_list(user_id=user.pk))

    @extend_schema(
        parameters=[
            OpenApiParameter("feature", str, required=True),
            OpenApiParameter("user_id", int, required=False),
        ],
        responses=CheckOutputSerializer,
    )
    @action(detail=False, methods=["get"], url_path="check")
    def check(self, request: Request) -> Response:
        query = CheckQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = subject_user(request, query.validated_data.get("user_id"))
        return Response(entitlement_check(user_id=user.pk, features=[query.validated_data["feature"]])[0])

    @extend_schema(request=BulkCheckInputSerializer, responses=BulkCheckOutputSerializer)
    @action(detail=False, methods=["post"], url_path="bulk-check")
    def bulk_check(self, request: Request) -> Response:
        data = BulkCheckInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = subject_user(request, data.validated_data.get("user_id"))
        return Response(
            {"results": entitlement_check(user_id=user.pk, features=data.validated_data["features"])}
        )
