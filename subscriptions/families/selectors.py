"""Reads of families."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from subscriptions.families.models import Family, FamilyInvitation


def family_for_user(*, user_id: int) -> Family | None:
    """The user's family with its members (two queries), or None."""
    return (
        Family.objects.filter(members__user_id=user_id)
        .select_related("owner")
        .prefetch_related("members__user")
        .first()
    )


def invitation_addressed_to(*, invitation: FamilyInvitation, user: Any) -> bool:
    if invitation.invitee_user_id is not None:
        return bool(invitation.invitee_user_id == user.pk)
    email = (getattr(user, "email", "") or "").strip()
    return bool(email) and invitation.invitee_email.lower() == email.lower()


def invitations_for_user(*, user: Any) -> QuerySet[FamilyInvitation]:
    """The pending, unexpired invitations addressed to `user`, newest first."""
    addressed = Q(invitee_user_id=user.pk)
    if getattr(user, "email", ""):
        addressed |= Q(invitee_user_id__isnull=True, invitee_email__iexact=user.email)
    return (
        FamilyInvitation.objects.filter(
            addressed, status=FamilyInvitation.Status.PENDING, expires_at__gt=timezone.now()
        )
        .select_related("family", "invited_by")
        .order_by("-created_at")
    )
