"""Writes of families: the owner creates one, adds and removes members within the plan's seats.

Each change sends a domain signal (subscriptions.signals) inside its transaction; the entitlements
app invalidates the members' cached checks on it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from payments_project.accounts.services import audit_record
from payments_project.errors import Conflict, DomainError, NotFound, constraint_name
from subscriptions import signals
from subscriptions.events import family_member_record
from subscriptions.families.models import Family, FamilyInvitation, FamilyMember
from subscriptions.families.selectors import invitation_addressed_to
from subscriptions.models import Subscription
from subscriptions.transitions import HOLDS_FAMILY_SEATS


def family_create(*, owner: Any, name: str = "") -> Family:
    """The caller owns the new family and is its first member."""
    try:
        with transaction.atomic():
            family = Family.objects.create(owner=owner, name=name)
            FamilyMember.objects.create(family=family, user=owner)
            family_member_record(family, user_id=owner.pk, added=True, actor=owner)
    except IntegrityError as exc:
        if constraint_name(exc) == "family_one_per_owner":
            raise Conflict("You already own a family.", code="already_owns_family") from exc
        if constraint_name(exc) == "familymember_one_family_per_user":
            raise Conflict("The user already belongs to a family.", code="already_in_family") from exc
        raise
    signals.family_member_added.send(sender=Family, family=family, user_id=owner.pk)
    return family


def family_max_members(*, family: Family) -> int | None:
    """The largest max_members among the family's live family-plan subscriptions."""
    sizes = Subscription.objects.filter(
        family=family, plan__is_family=True, status__in=HOLDS_FAMILY_SEATS
    ).values_list("plan__max_members", flat=True)
    return max((size for size in sizes if size), default=None)


def family_member_add(*, family: Family, user: Any, actor: Any = None) -> FamilyMember:
    """Refused with family_full past the plan's max_members (counted under a lock on the family
    row, so two concurrent adds cannot both take the last seat), already_in_family when the user
    is in a family (the unique constraint decides), no_family_plan without a live family plan."""
    try:
        with transaction.atomic():
            locked = Family.objects.select_for_update().get(pk=family.pk)
            limit = family_max_members(family=locked)
            if limit is None:
                raise Conflict("The family has no active family-plan subscription.", code="no_family_plan")
            if FamilyMember.objects.filter(family=locked).count() >= limit:
                raise Conflict(f"The family already has its {limit} members.", code="family_full")
            member = FamilyMember.objects.create(family=locked, user=user)
            family_member_record(locked, user_id=user.pk, added=True, actor=actor)
    except IntegrityError as exc:
        if constraint_name(exc) == "familymember_one_family_per_user":
            raise Conflict("The user already belongs to a family.", code="already_in_family") from exc
        raise
    signals.family_member_added.send(sender=Family, family=locked, user_id=user.pk)
    return member


def family_member_remove(*, family: Family, user: Any, actor: Any = None) -> None:
    """A member leaves (or is removed); the owner cannot leave their own family."""
    if user.pk == family.owner_id:
        raise Conflict("The owner cannot leave the family.", code="owner_cannot_leave")
    with transaction.atomic():
        deleted, _ = FamilyMember.objects.filter(family=family, user=user).delete()
        if not deleted:
            raise NotFound("The user is not a member of this family.", code="not_a_member")
        family_member_record(family, user_id=user.pk, added=False, actor=actor)
        signals.family_member_removed.send(sender=Family, family=family, user_id=user.pk)


# --- invitations: a member joins only by accepting ------------------------------------------------


def family_invitation_create(
    *, family: Family, invited_by: Any, user_id: int | None = None, email: str = ""
) -> FamilyInvitation:
    """The owner invites someone by user id or email; whether such a user exists is never said.
    A second pending invitation to the same invitee answers the first one."""
    email = email.strip()
    if (user_id is None) == (not email):
        raise DomainError("Invite by user_id or by email, one of them.", code="validation_error")
    if user_id is not None and user_id == invited_by.pk:
        raise Conflict("You are already in your family.", code="already_in_family")
    now = timezone.now()
    expires_at = now + timedelta(hours=settings.FAMILY_INVITATION_TTL_HOURS)
    pending = FamilyInvitation.objects.filter(family=family, status=FamilyInvitation.Status.PENDING)
    mine = (
        pending.filter(invitee_user_id=user_id)
        if user_id is not None
        else pending.filter(invitee_email__iexact=email)
    )
    try:
        with transaction.atomic():
            # An expired invitation is no longer pending: set it aside (revoked) so the new one can
            # be pending in its place; otherwise the invitee could never be invited again.
            mine.filter(expires_at__lte=now).update(status=FamilyInvitation.Status.REVOKED, responded_at=now)
            return FamilyInvitation.objects.create(
                family=family,
                invited_by=invited_by,
                invitee_user_id=user_id,
                invitee_email=email,
                expires_at=expires_at,
            )
    except IntegrityError as exc:
        if constraint_name(exc) not in {
            "familyinvitation_one_pending_per_user",
            "familyinvitation_one_pending_per_email",
        }:
            raise
    existing = mine.first()
    if existing is None:  # answered in between: the caller may simply try again
        raise Conflict("That invitation was just answered; try again.", code="invitation_changed")
    return existing


def _invitation_for(*, invitation_id: int, user: Any) -> FamilyInvitation:
    """The invitation addressed to `user` (by id, or by their email); anyone else's is 404."""
    invitation = FamilyInvitation.objects.select_related("family").filter(pk=invitation_id).first()
    if invitation is None or not invitation_addressed_to(invitation=invitation, user=user):
        raise NotFound("No such invitation.")
    return invitation


def _respond(*, invitation: FamilyInvitation, user: Any, status: str) -> bool:
    """Move a pending, unexpired invitation to `status`, once (a conditional UPDATE)."""
    now = timezone.now()
    return bool(
        FamilyInvitation.objects.filter(
            pk=invitation.pk, status=FamilyInvitation.Status.PENDING, expires_at__gt=now
        ).update(status=status, responded_at=now, accepted_by=user if status == "accepted" else None)
    )


def _refuse_not_pending(invitation: FamilyInvitation) -> None:
    invitation.refresh_from_db()
    if invitation.status == FamilyInvitation.Status.PENDING:
        raise Conflict("The invitation has expired.", code="invitation_expired")
    raise Conflict(f"The invitation was already {invitation.status}.", code="invitation_closed")


def family_invitation_accept(*, invitation_id: int, user: Any) -> FamilyInvitation:
    """The invitee joins the family (within the plan's seats, as any member), in one transaction
    with the invitation's acceptance."""
    invitation = _invitation_for(invitation_id=invitation_id, user=user)
    with transaction.atomic():
        if not _respond(invitation=invitation, user=user, status=FamilyInvitation.Status.ACCEPTED):
            _refuse_not_pending(invitation)
        family_member_add(family=invitation.family, user=user, actor=user)
    invitation.refresh_from_db()
    return invitation


def family_invitation_decline(*, invitation_id: int, user: Any) -> FamilyInvitation:
    invitation = _invitation_for(invitation_id=invitation_id, user=user)
    if not _respond(invitation=invitation, user=user, status=FamilyInvitation.Status.DECLINED):
        _refuse_not_pending(invitation)
    invitation.refresh_from_db()
    return invitation


def family_member_add_by_staff(
    *, family: Family, user: Any, staff_user: Any, reason: str = ""
) -> FamilyMember:
    """Staff add a member directly (support cases), audited in the same transaction."""
    with transaction.atomic():
        member = family_member_add(family=family, user=user, actor=staff_user)
        audit_record(
            actor=staff_user,
            action="family_member_add",
            target=family,
            subject_user_id=user.pk,
            reason=reason,
            data={"family_id": family.pk, "user_id": user.pk},
        )
    return member
