"""Entitlement checks over the API (the hot path answers warm ones before these views).

The check views build plain dicts in the selector: no serializer per item, no N+1, no Stripe call.
The output serializers below document the responses (OpenAPI); they are not run per request.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from entitlements.selectors import entitlement_check, entitlement_list
from payments_project.api import WholeNumberField, printable, subject_user_for_read

# The input limits of the check actions; the hot path (entitlements.hotpath) declines input
# beyond them, so DRF's serializers answer it.
MAX_BULK_FEATURES = 200
FEATURE_CODE_MAX_LENGTH = 64
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
    feature = serializers.CharField(
        max_length=FEATURE_CODE_MAX_LENGTH, validators=[printable], trim_whitespace=False
    )
    user_id = WholeNumberField(required=False, min_value=1, max_value=2**63 - 1)


class BulkCheckInputSerializer(serializers.Serializer):
    features = serializers.ListField(
        child=serializers.CharField(
            max_length=FEATURE_CODE_MAX_LENGTH, validators=[printable], trim_whitespace=False
        ),
        allow_empty=False,
        max_length=MAX_BULK_FEATURES,
    )
    user_id = WholeNumberField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text="Another user's answer: support, finance, service accounts, superusers.",
    )


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
    resets_at = serializers.DateTimeField(
        allow_null=True, help_text="Metered and limit features: when the period's counter starts again."
    )


class BulkCheckOutputSerializer(serializers.Serializer):
    results = CheckOutputSerializer(many=True)


def check_response_data(results: list[dict[str, Any]], *, bulk: bool) -> Any:
    """The body of check (its one result) or bulk-check (`{"results": [...]}`), from the selector's
    results; the hot path answers with the same."""
    return {"results": results} if bulk else results[0]


USER_ID_READ = OpenApiParameter(
    "user_id",
    int,
    required=False,
    description="Another user's answer: support and finance staff, service accounts and superusers "
    "(a read, never a write). Others get 403 unless it is their own id.",
)


class EntitlementViewSet(viewsets.ViewSet):
    """What the caller (or, for staff and service accounts, `user_id`) may use. All three are reads:
    support may ask for any user."""

    ratelimit_scope = "entitlements"
    renderer_classes = [JSONRenderer]  # the hot path skips content negotiation with the browsable API

    @extend_schema(
        parameters=[USER_ID_READ],
        responses=CheckOutputSerializer(many=True),
        description="The features the user may use now. Any authenticated user for themselves; "
        "`user_id`: support, finance, service accounts, superusers.",
    )
    def list(self, request: Request) -> Response:
        user = subject_user_for_read(request, request.query_params.get("user_id"))
        return Response(entitlement_list(user_id=user.pk))

    @extend_schema(
        parameters=[OpenApiParameter("feature", str, required=True), USER_ID_READ],
        responses=CheckOutputSerializer,
        description="May the user use one feature. Any authenticated user for themselves; "
        "`user_id`: support, finance, service accounts, superusers.",
    )
    @action(detail=False, methods=["get"], url_path="check")
    def check(self, request: Request) -> Response:
        query = CheckQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = subject_user_for_read(request, query.validated_data.get("user_id"))
        results = entitlement_check(user_id=user.pk, features=[query.validated_data["feature"]])
        return Response(check_response_data(results, bulk=False))

    @extend_schema(
        request=BulkCheckInputSerializer,
        responses=BulkCheckOutputSerializer,
        description="Several features at once (a read, though a POST). `user_id` in the body: "
        "support, finance, service accounts, superusers.",
    )
    @action(detail=False, methods=["post"], url_path="bulk-check")
    def bulk_check(self, request: Request) -> Response:
        data = BulkCheckInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = subject_user_for_read(request, data.validated_data.get("user_id"))
        results = entitlement_check(user_id=user.pk, features=data.validated_data["features"])
        return Response(check_response_data(results, bulk=True))
