"""Family sharing over the API: the owner pays a family plan, members share its entitlements."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from payments_project.accounts.selectors import can_act_for_any_user
from subscriptions.families.models import Family
from subscriptions.families.selectors import family_for_user
from subscriptions.families.services import family_create, family_member_add, family_member_remove


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
        family_member_add(family=family, user=user, actor=request.user)
        return Response(_family_output(family), status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<user_id>\d+)")
    def member_remove(self, request: Request, pk: str, user_id: str) -> Response:
        family = self._family(pk)
        allowed = request.user.pk in (family.owner_id, int(user_id)) or can_act_for_any_user(request.user)
        if not allowed:
            raise exceptions.PermissionDenied("Only the owner, staff or the member may remove a member.")
        user = get_object_or_404(get_user_model(), pk=user_id)
        family_member_remove(family=family, user=user, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
