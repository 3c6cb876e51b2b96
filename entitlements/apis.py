"""Entitlement checks (the hot path) and family management.

The check views build plain dicts in the selector: no serializer per item, no N+1, no Stripe call.
The output serializers below document the responses (OpenAPI); they are not run per request.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from entitlements.models import Family
from entitlements.selectors import entitlement_check, entitlement_list, family_for_user
from entitlements.services import family_create, family_member_add, family_member_remove
from payments_project.api import can_act_for_any_user, subject_user

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


class FamilyCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class FamilyMemberInputSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()


class FamilyMemberOutputSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    username = serializers.CharField(source="user.username")
    joined_at = serializers.DateTimeField()


class FamilyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    owner_id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    members = FamilyMemberOutputSerializer(source="members.all", many=True)


def _family_output(family: Family) -> dict[str, Any]:
    return dict(FamilyOutputSerializer(family).data)


class FamilyViewSet(viewsets.GenericViewSet):
    """Families: the owner pays a family plan, members share its entitlements."""

    ratelimit_scope = "entitlements"
    lookup_value_regex = r"\d+"
    serializer_class = FamilyOutputSerializer

    def _family(self, pk: str) -> Family:
        return get_object_or_404(Family.objects.all(), pk=pk)

    @extend_schema(request=FamilyCreateInputSerializer, responses={201: FamilyOutputSerializer})
    def create(self, request: Request) -> Response:
        data = FamilyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        family = family_create(owner=request.user, name=data.validated_data["name"])
        return Response(_family_output(family), status=status.HTTP_201_CREATED)

    @extend_schema(responses=FamilyOutputSerializer)
    @action(detail=False, methods=["get"], url_path="mine")
    def mine(self, request: Request) -> Response:
        family = family_for_user(user_id=int(request.user.pk or 0))
        if family is None:
            raise exceptions.NotFound("You are not in a family.")
        return Response(_family_output(family))

    @extend_schema(request=FamilyMemberInputSerializer, responses={201: FamilyOutputSerializer})
    @action(detail=True, methods=["post"], url_path="members")
    def members(self, request: Request, pk: str) -> Response:
        data = FamilyMemberInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        family = self._family(pk)
        if request.user.pk != family.owner_id and not can_act_for_any_user(request.user):
            raise exceptions.PermissionDenied("Only the family's owner or staff may add members.")
        user = get_object_or_404(get_user_model(), pk=data.validated_data["user_id"])
        family_member_add(family=family, user=user)
        return Response(_family_output(family), status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<user_id>\d+)")
    def member_remove(self, request: Request, pk: str, user_id: str) -> Response:
        family = self._family(pk)
        allowed = request.user.pk in (family.owner_id, int(user_id)) or can_act_for_any_user(request.user)
        if not allowed:
            raise exceptions.PermissionDenied("Only the owner, staff or the member may remove a member.")
        user = get_object_or_404(get_user_model(), pk=user_id)
        family_member_remove(family=family, user=user)
        return Response(status=status.HTTP_204_NO_CONTENT)
