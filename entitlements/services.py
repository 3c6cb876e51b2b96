"""Writes: entitlements follow subscriptions and one-time purchases; families share a plan.

Every write invalidates the affected users' cached snapshots after the transaction commits
(cache.snapshot_invalidate_on_commit). A family's rows are cached in each member's snapshot, so a
family change invalidates every member.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.models import Plan, PlanFeature
from entitlements.cache import snapshot_invalidate, snapshot_invalidate_on_commit
from entitlements.events import entitlements_changed_record
from entitlements.models import Entitlement, SnapshotInvalidation
from payments_project.accounts.services import audit_record
from payments_project.errors import DomainError
from subscriptions.models import FamilyMember, Subscription
from subscriptions.transitions import ACCESS_SUSPENDED


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
    """The plan's rows for the subscription, each with `status`; announces the rows that are new
    or whose status changed (granting twice announces nothing the second time)."""
    holder = _holder(subscription=subscription, plan=plan)
    now = timezone.now()
    before = dict(Entitlement.objects.filter(subscription=subscription).values_list("feature_id", "status"))
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
    entitlements_changed_record(ids=[row.pk for row in rows if before.get(row.feature_id) != row.status])
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


def entitlement_extend_until(*, subscription: Subscription, until: datetime) -> int:
    """A renewal being retried (dunning): the rows still usable stay so until `until`, the case's
    cancel day, whatever the unpaid period's end says (never shortened)."""
    with transaction.atomic():
        updated = Entitlement.objects.filter(
            subscription=subscription, status=Entitlement.Status.ACTIVE, expires_at__lt=until
        ).update(expires_at=until, updated_at=timezone.now())
        if updated:
            _invalidate_subscription(subscription=subscription)
    return updated


def _update_announced(rows: Any, *, actor: Any = None, **values: Any) -> int:
    """Update `rows` (locked first, so each changed row is announced once) and announce them."""
    ids = list(rows.select_for_update().values_list("pk", flat=True))
    updated = Entitlement.objects.filter(pk__in=ids).update(updated_at=timezone.now(), **values)
    entitlements_changed_record(ids=ids, actor=actor)
    return updated


def _set_status(
    *,
    subscription: Subscription,
    from_status: str,
    to_status: str,
    keep_feature_codes: frozenset[str] = frozenset(),
    **extra: Any,
) -> int:
    with transaction.atomic():
        updated = _update_announced(
            Entitlement.objects.filter(subscription=subscription, status=from_status).exclude(
                feature__code__in=keep_feature_codes
            ),
            status=to_status,
            **extra,
        )
        if updated:
            _invalidate_subscription(subscription=subscription)
    return updated


def entitlement_suspend_for_subscription(
    *, subscription: Subscription, keep_feature_codes: frozenset[str] = frozenset()
) -> int:
    """Suspend the subscription's active entitlements, except the features listed (a dunning
    policy may keep some while the renewal is retried)."""
    return _set_status(
        subscription=subscription,
        from_status=Entitlement.Status.ACTIVE,
        to_status=Entitlement.Status.SUSPENDED,
        keep_feature_codes=keep_feature_codes,
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
        updated = _update_announced(
            Entitlement.objects.filter(subscription=subscription).exclude(status=Entitlement.Status.REVOKED),
            status=Entitlement.Status.REVOKED,
        )
        if updated:
            _invalidate_subscription(subscription=subscription)
    return updated


def entitlement_replace_plan_for_subscription(*, subscription: Subscription) -> list[Entitlement]:
    """Plan change: features the new plan lacks are revoked, the others granted or updated."""
    plan = subscription.plan
    status = (
        Entitlement.Status.SUSPENDED if subscription.status in ACCESS_SUSPENDED else Entitlement.Status.ACTIVE
    )
    with transaction.atomic():
        _invalidate_subscription(subscription=subscription)
        _update_announced(
            Entitlement.objects.filter(subscription=subscription)
            .exclude(feature_id__in=PlanFeature.objects.filter(plan=plan).values("feature_id"))
            .exclude(status=Entitlement.Status.REVOKED),
            status=Entitlement.Status.REVOKED,
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
            row, created = Entitlement.objects.get_or_create(
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
            if created:
                entitlements_changed_record(ids=[row.pk])
        snapshot_invalidate_on_commit(user_ids=[user.pk])
    return rows


def entitlement_revoke_one_time(*, source_ref: str) -> int:
    with transaction.atomic():
        rows = Entitlement.objects.filter(source=Entitlement.Source.ONE_TIME, source_ref=source_ref).exclude(
            status=Entitlement.Status.REVOKED
        )
        holders = list(rows.values_list("user_id", "family_id"))
        updated = _update_announced(rows, status=Entitlement.Status.REVOKED)
        snapshot_invalidate_on_commit(
            user_ids=holders_of(user_ids=[u for u, _ in holders], family_ids=[f for _, f in holders])
        )
    return updated


def entitlement_set_status(*, entitlements: Iterable[Entitlement], status: str, actor: Any) -> int:
    """Staff: suspend or revoke chosen rows (admin actions), each audited."""
    ids = [row.pk for row in entitlements]
    with transaction.atomic():
        rows = Entitlement.objects.filter(pk__in=ids).exclude(status=status)
        holders = list(rows.values_list("user_id", "family_id"))
        for row in rows.only("pk", "user_id", "status"):
            audit_record(
                actor=actor,
                action=f"entitlement.{status}",
                target=row,
                subject_user_id=row.user_id,
                data={"from": row.status, "to": status},
            )
        updated = _update_announced(rows, actor=actor, status=status)
        snapshot_invalidate_on_commit(
            user_ids=holders_of(user_ids=[u for u, _ in holders], family_ids=[f for _, f in holders])
        )
    return updated


_RETRY_BATCH = 1000


def snapshot_invalidations_retry() -> int:
    """Re-apply the snapshot drops Redis has not confirmed yet; the number applied.

    The beat job runs this every ENTITLEMENTS_INVALIDATION_RETRY_SECONDS. Rows are deleted only
    after Redis confirmed their drop (INCR of the version and DEL of the snapshot, in one MULTI),
    so while Redis is unreachable they wait and nothing is lost. Deleting only the rows read keeps
    a newer change's row (written meanwhile) for its own drop. A row whose writer is about to
    delete it itself is dropped twice: harmless, one more cold check for that user.
    """
    applied = 0
    while True:
        rows = list(SnapshotInvalidation.objects.order_by("pk").values_list("pk", "user_id")[:_RETRY_BATCH])
        if not rows or not snapshot_invalidate(user_ids=[user_id for _, user_id in rows]):
            return applied
        SnapshotInvalidation.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
        applied += len(rows)
        if len(rows) < _RETRY_BATCH:
            return applied
