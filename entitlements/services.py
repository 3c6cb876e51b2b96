"""Writes: entitlements follow subscriptions and one-time purchases; families share a plan.

Every write invalidates the affected users' cached snapshots after the transaction commits
(cache.snapshot_invalidate_on_commit). A family's rows are cached in each member's snapshot, so a
family change invalidates every member.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import Plan, PlanFeature
from entitlements.cache import snapshot_invalidate_on_commit
from entitlements.models import Entitlement, Family, FamilyMember
from payments_project.errors import Conflict, DomainError, NotFound
from subscriptions.models import Subscription

# A family-plan subscription in one of these states still defines the family's size.
LIVE_SUBSCRIPTION_STATUSES = [
    Subscription.Status.TRIALING,
    Subscription.Status.ACTIVE,
    Subscription.Status.PAST_DUE,
    Subscription.Status.UNPAID,
    Subscription.Status.PAUSED,
    Subscription.Status.SUSPENDED,
]
SUSPENDED_SUBSCRIPTION_STATUSES = {
    Subscription.Status.PAST_DUE,
    Subscription.Status.UNPAID,
    Subscription.Status.PAUSED,
    Subscription.Status.SUSPENDED,
}


def _constraint_name(exc: IntegrityError) -> str:
    diag = getattr(exc.__cause__, "diag", None)
    return str(getattr(diag, "constraint_name", "") or "")


def holders_of(*, user_ids: Iterable[int | None], family_ids: Iterable[int | None]) -> set[int]:
    users = {user_id for user_id in user_ids if user_id}
    families = {family_id for family_id in family_ids if family_id}
    if families:
        users |= set(FamilyMember.objects.filter(family_id__in=families).values_list("user_id", flat=True))
    return users


def _invalidate_subscription(*, subscription: Subscription) -> None:
    held_by = Entitlement.objects.filter(subscription=subscription).values_list("family_id", flat=True)
    snapshot_invalidate_on_commit(
        user_ids=holders_of(user_ids=[subscription.user_id], family_ids=[subscription.family_id, *held_by])
    )


def _holder(*, subscription: Subscription, plan: Plan) -> dict[str, Any]:
    if subscription.family_id and plan.is_family:
        return {"user": None, "family_id": subscription.family_id}
    return {"user_id": subscription.user_id, "family": None}


def _upsert_plan_rows(*, subscription: Subscription, plan: Plan, status: str) -> list[Entitlement]:
    holder = _holder(subscription=subscription, plan=plan)
    now = timezone.now()
    rows = []
    for plan_feature in PlanFeature.objects.filter(plan=plan).select_related("feature"):
        row, _created = Entitlement.objects.update_or_create(
            subscription=subscription,
            feature=plan_feature.feature,
            defaults={
                **holder,
                "plan": plan,
                "source": Entitlement.Source.SUBSCRIPTION,
                "status": status,
                "limit": plan_feature.limit,
                "reset_period": plan_feature.reset_period,
                "expires_at": subscription.current_period_end,
            },
            create_defaults={
                **holder,
                "plan": plan,
                "source": Entitlement.Source.SUBSCRIPTION,
                "status": status,
                "limit": plan_feature.limit,
                "reset_period": plan_feature.reset_period,
                "expires_at": subscription.current_period_end,
                "granted_at": now,
            },
        )
        rows.append(row)
    return rows


def entitlement_grant_for_subscription(*, subscription: Subscription) -> list[Entitlement]:
    """One active row per feature of the plan; granting twice leaves the same rows."""
    with transaction.atomic():
        _invalidate_subscription(subscription=subscription)  # holders before the change
        rows = _upsert_plan_rows(
            subscription=subscription, plan=subscription.plan, status=Entitlement.Status.ACTIVE
        )
        _invalidate_subscription(subscription=subscription)  # and after
    return rows


def entitlement_extend_for_subscription(*, subscription: Subscription) -> int:
    """A paid renewal: the live rows now expire at the new period end (granted if none exist)."""
    with transaction.atomic():
        updated = (
            Entitlement.objects.filter(subscription=subscription)
            .exclude(status=Entitlement.Status.REVOKED)
            .update(expires_at=subscription.current_period_end, updated_at=timezone.now())
        )
        if not updated and not Entitlement.objects.filter(subscription=subscription).exists():
            return len(entitlement_grant_for_subscription(subscription=subscription))
        _invalidate_subscription(subscription=subscription)
    return updated


def _set_status(*, subscription: Subscription, from_status: str, to_status: str, **extra: Any) -> int:
    with transaction.atomic():
        updated = Entitlement.objects.filter(subscription=subscription, status=from_status).update(
            status=to_status, updated_at=timezone.now(), **extra
        )
        if updated:
            _invalidate_subscription(subscription=subscription)
    return updated


def entitlement_suspend_for_subscription(*, subscription: Subscription) -> int:
    return _set_status(
        subscription=subscription,
        from_status=Entitlement.Status.ACTIVE,
        to_status=Entitlement.Status.SUSPENDED,
    )


def entitlement_restore_for_subscription(*, subscription: Subscription) -> int:
    return _set_status(
        subscription=subscription,
        from_status=Entitlement.Status.SUSPENDED,
        to_status=Entitlement.Status.ACTIVE,
        expires_at=subscription.current_period_end,
    )


def entitlement_revoke_for_subscription(*, subscription: Subscription) -> int:
    with transaction.atomic():
        updated = (
            Entitlement.objects.filter(subscription=subscription)
            .exclude(status=Entitlement.Status.REVOKED)
            .update(status=Entitlement.Status.REVOKED, updated_at=timezone.now())
        )
        if updated:
            _invalidate_subscription(subscription=subscription)
    return updated


def entitlement_replace_plan_for_subscription(*, subscription: Subscription) -> list[Entitlement]:
    """Plan change: features the new plan lacks are revoked, the others granted or updated."""
    plan = subscription.plan
    status = (
        Entitlement.Status.SUSPENDED
        if subscription.status in SUSPENDED_SUBSCRIPTION_STATUSES
        else Entitlement.Status.ACTIVE
    )
    with transaction.atomic():
        _invalidate_subscription(subscription=subscription)
        Entitlement.objects.filter(subscription=subscription).exclude(
            feature_id__in=PlanFeature.objects.filter(plan=plan).values("feature_id")
        ).exclude(status=Entitlement.Status.REVOKED).update(
            status=Entitlement.Status.REVOKED, updated_at=timezone.now()
        )
        rows = _upsert_plan_rows(subscription=subscription, plan=plan, status=status)
        _invalidate_subscription(subscription=subscription)
    return rows


def entitlement_grant_one_time(
    *, user: Any, plan: Plan, source_ref: str, expires_at: datetime | None = None
) -> list[Entitlement]:
    """A purchase's features, keyed by the payment reference. Replaying it changes nothing, and a
    purchase revoked (refunded) stays revoked."""
    if not source_ref:
        raise DomainError("A one-time grant needs the payment reference.", code="validation_error")
    now = timezone.now()
    rows = []
    with transaction.atomic():
        for plan_feature in PlanFeature.objects.filter(plan=plan).select_related("feature"):
            row, _created = Entitlement.objects.get_or_create(
                source=Entitlement.Source.ONE_TIME,
                source_ref=source_ref,
                feature=plan_feature.feature,
                defaults={
                    "user": user,
                    "plan": plan,
                    "status": Entitlement.Status.ACTIVE,
                    "limit": plan_feature.limit,
                    "reset_period": plan_feature.reset_period,
                    "granted_at": now,
                    "expires_at": expires_at,
                },
            )
            rows.append(row)
        snapshot_invalidate_on_commit(user_ids=[user.pk])
    return rows


def entitlement_revoke_one_time(*, source_ref: str) -> int:
    with transaction.atomic():
        rows = Entitlement.objects.filter(source=Entitlement.Source.ONE_TIME, source_ref=source_ref).exclude(
            status=Entitlement.Status.REVOKED
        )
        holders = list(rows.values_list("user_id", "family_id"))
        updated = rows.update(status=Entitlement.Status.REVOKED, updated_at=timezone.now())
        snapshot_invalidate_on_commit(
            user_ids=holders_of(user_ids=[u for u, _ in holders], family_ids=[f for _, f in holders])
        )
    return updated


def entitlement_set_status(*, entitlements: Iterable[Entitlement], status: str) -> int:
    """Staff: suspend or revoke chosen rows (admin actions)."""
    ids = [row.pk for row in entitlements]
    with transaction.atomic():
        rows = Entitlement.objects.filter(pk__in=ids).exclude(status=status)
        holders = list(rows.values_list("user_id", "family_id"))
        updated = rows.update(status=status, updated_at=timezone.now())
        snapshot_invalidate_on_commit(
            user_ids=holders_of(user_ids=[u for u, _ in holders], family_ids=[f for _, f in holders])
        )
    return updated


# --- families ---------------------------------------------------------------------------------


def family_create(*, owner: Any, name: str = "") -> Family:
    """The caller owns the new family and is its first member."""
    try:
        with transaction.atomic():
            family = Family.objects.create(owner=owner, name=name)
            FamilyMember.objects.create(family=family, user=owner)
    except IntegrityError as exc:
        if _constraint_name(exc) == "family_one_per_owner":
            raise Conflict("You already own a family.", code="already_owns_family") from exc
        if _constraint_name(exc) == "familymember_one_family_per_user":
            raise Conflict("The user already belongs to a family.", code="already_in_family") from exc
        raise
    snapshot_invalidate_on_commit(user_ids=[owner.pk])
    return family


def family_max_members(*, family: Family) -> int | None:
    """The largest max_members among the family's live family-plan subscriptions."""
    sizes = Subscription.objects.filter(
        family=family, plan__is_family=True, status__in=LIVE_SUBSCRIPTION_STATUSES
    ).values_list("plan__max_members", flat=True)
    return max((size for size in sizes if size), default=None)


def family_member_add(*, family: Family, user: Any) -> FamilyMember:
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
    except IntegrityError as exc:
        if _constraint_name(exc) == "familymember_one_family_per_user":
            raise Conflict("The user already belongs to a family.", code="already_in_family") from exc
        raise
    snapshot_invalidate_on_commit(user_ids=[user.pk])
    return member


def family_member_remove(*, family: Family, user: Any) -> None:
    """A member leaves (or is removed); the owner cannot leave their own family."""
    if user.pk == family.owner_id:
        raise Conflict("The owner cannot leave the family.", code="owner_cannot_leave")
    with transaction.atomic():
        deleted, _ = FamilyMember.objects.filter(family=family, user=user).delete()
        if not deleted:
            raise NotFound("The user is not a member of this family.", code="not_a_member")
        snapshot_invalidate_on_commit(user_ids=[user.pk])
