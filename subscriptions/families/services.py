"""Writes of families: the owner creates one, adds and removes members within the plan's seats.

Each change sends a domain signal (subscriptions.signals) inside its transaction; the entitlements
app invalidates the members' cached checks on it.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from payments_project.errors import Conflict, NotFound, constraint_name
from subscriptions import signals
from subscriptions.events import family_member_record
from subscriptions.families.models import Family, FamilyMember
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
