"""Family sharing over the API: the owner pays a family plan, members share its entitlements."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from payments_project.accounts.selectors import can_act_for_any_user
from payments_project.api import WholeNumberField
from payments_project.errors import DomainError
from subscriptions.families.models import Family, FamilyInvitation
from subscriptions.families.selectors import family_for_user, invitations_for_user
from subscriptions.families.services import (
    family_create,
    family_invitation_accept,
    family_invitation_create,
    family_invitation_decline,
    family_member_add_by_staff,
    family_member_remove,
)


class FamilyCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class FamilyMemberInputSerializer(serializers.Serializer):
    user_id = WholeNumberField(min_value=1, max_value=2**63 - 1)
    reason = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True)


INVITATION_STATUSES = ["pending", "accepted", "declined", "revoked", "expired"]


class InvitationInputSerializer(serializers.Serializer):
    user_id = WholeNumberField(min_value=1, max_value=2**63 - 1, required=False)
    email = serializers.EmailField(max_length=254, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("user_id" in attrs) == ("email" in attrs):
            raise serializers.ValidationError("Give a user_id or an email, one of them.")
        return attrs


class InviteeOutputSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    username = serializers.CharField()


class SentInvitationOutputSerializer(serializers.Serializer):
    """What the owner sees: who the invitee is only once they accepted."""

    id = serializers.IntegerField()
    family_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=INVITATION_STATUSES)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    invitee = serializers.SerializerMethodField()

    @extend_schema_field(InviteeOutputSerializer(allow_null=True))
    def get_invitee(self, invitation: FamilyInvitation) -> dict[str, Any] | None:
        if invitation.status != FamilyInvitation.Status.ACCEPTED or invitation.accepted_by is None:
            return None
        return {"user_id": invitation.accepted_by.pk, "username": invitation.accepted_by.get_username()}

    def to_representation(self, instance: FamilyInvitation) -> Any:
        data = super().to_representation(instance)
        data["status"] = invitation_status(instance)
        return data


class ReceivedInvitationOutputSerializer(serializers.Serializer):
    """What the invitee sees: the family and who invited them."""

    id = serializers.IntegerField()
    family_id = serializers.IntegerField()
    family_name = serializers.CharField(source="family.name")
    invited_by = serializers.CharField(source="invited_by.username")
    status = serializers.ChoiceField(choices=INVITATION_STATUSES)
    expires_at = serializers.DateTimeField()

    def to_representation(self, instance: FamilyInvitation) -> Any:
        data = super().to_representation(instance)
        data["status"] = invitation_status(instance)
        return data


def invitation_status(invitation: FamilyInvitation) -> str:
    if invitation.status == FamilyInvitation.Status.PENDING and invitation.expires_at <= timezone.now():
        return "expired"
    return str(invitation.status)


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
    lookup_value_regex = r"[0-9]{1,18}"  # bounded: a 5,000-digit id must be a 404, not a 500
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

    @extend_schema(
        request=FamilyMemberInputSerializer,
        responses={201: FamilyOutputSerializer},
        summary="Add a member directly (service accounts and superusers, audited)",
        description="Owners invite instead (POST /families/{id}/invitations/): nobody joins a family "
        "without accepting. Service accounts and superusers add directly, audited.",
    )
    @action(detail=True, methods=["post"], url_path="members")
    def members(self, request: Request, pk: str) -> Response:
        data = FamilyMemberInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        family = self._family(pk)
        if not can_act_for_any_user(request.user):
            raise DomainError(
                "Members join by accepting an invitation: POST /api/v1/families/{id}/invitations/.",
                code="invitation_required",
                status_code=403,
            )
        user = get_object_or_404(get_user_model(), pk=data.validated_data["user_id"])
        family_member_add_by_staff(
            family=family, user=user, staff_user=request.user, reason=data.validated_data["reason"]
        )
        return Response(_family_output(family), status=status.HTTP_201_CREATED)

    @extend_schema(
        methods=["post"],
        request=InvitationInputSerializer,
        responses={201: SentInvitationOutputSerializer},
        summary="Invite someone to the family (the owner)",
        description="By user id or email. The answer never says whether such a user exists; the "
        "invitee's details show once they accept. Expires after FAMILY_INVITATION_TTL_HOURS.",
    )
    @extend_schema(
        methods=["get"],
        responses=SentInvitationOutputSerializer(many=True),
        summary="The family's invitations (the owner)",
    )
    @action(detail=True, methods=["get", "post"], url_path="invitations", pagination_class=None)
    def invitations(self, request: Request, pk: str) -> Response:
        family = self._family(pk)
        if request.user.pk != family.owner_id and not can_act_for_any_user(request.user):
            raise exceptions.PermissionDenied("Only the family's owner may invite.")
        if request.method == "GET":
            sent = family.invitations.select_related("accepted_by").order_by("-created_at")[:200]
            return Response(SentInvitationOutputSerializer(sent, many=True).data)
        data = InvitationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        invitation = family_invitation_create(
            family=family,
            invited_by=request.user,
            user_id=data.validated_data.get("user_id"),
            email=data.validated_data.get("email", ""),
        )
        return Response(SentInvitationOutputSerializer(invitation).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="families_invitations_received",
        responses=ReceivedInvitationOutputSerializer(many=True),
        summary="Invitations addressed to me (pending)",
    )
    @action(detail=False, methods=["get"], url_path="invitations", pagination_class=None)
    def received_invitations(self, request: Request) -> Response:
        invitations = invitations_for_user(user=request.user)[:200]
        return Response(ReceivedInvitationOutputSerializer(invitations, many=True).data)

    @extend_schema(
        request=None,
        responses=ReceivedInvitationOutputSerializer,
        summary="Accept an invitation (the invitee): join the family",
    )
    @action(detail=False, methods=["post"], url_path=r"invitations/(?P<invitation_id>[0-9]{1,18})/accept")
    def accept_invitation(self, request: Request, invitation_id: str) -> Response:
        invitation = family_invitation_accept(invitation_id=int(invitation_id), user=request.user)
        return Response(ReceivedInvitationOutputSerializer(invitation).data)

    @extend_schema(
        request=None, responses=ReceivedInvitationOutputSerializer, summary="Decline an invitation"
    )
    @action(detail=False, methods=["post"], url_path=r"invitations/(?P<invitation_id>[0-9]{1,18})/decline")
    def decline_invitation(self, request: Request, invitation_id: str) -> Response:
        invitation = family_invitation_decline(invitation_id=int(invitation_id), user=request.user)
        return Response(ReceivedInvitationOutputSerializer(invitation).data)

    @extend_schema(responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<user_id>[0-9]{1,18})")
    def member_remove(self, request: Request, pk: str, user_id: str) -> Response:
        family = self._family(pk)
        allowed = request.user.pk in (family.owner_id, int(user_id)) or can_act_for_any_user(request.user)
        if not allowed:
            raise exceptions.PermissionDenied("Only the owner, staff or the member may remove a member.")
        user = get_object_or_404(get_user_model(), pk=user_id)
        family_member_remove(family=family, user=user, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
