"""Subscription domain signals -> entitlement services. Sent inside the sender's transaction, so
a grant commits or rolls back with the subscription change; each service is idempotent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from billing.models import Payment
from entitlements import services
from entitlements.cache import snapshot_invalidate_on_commit
from entitlements.models import Entitlement
from entitlements.selectors import feature_codes_forget
from subscriptions.dunning.selectors import past_due_kept_features
from subscriptions.models import Family, Subscription


def on_subscription_activated(sender: Any, *, subscription: Subscription, **kwargs: Any) -> None:
    services.entitlement_grant_for_subscription(subscription=subscription)


def on_subscription_renewed(sender: Any, *, subscription: Subscription, **kwargs: Any) -> None:
    services.entitlement_extend_for_subscription(subscription=subscription)


def on_subscription_suspended(sender: Any, *, subscription: Subscription, **kwargs: Any) -> None:
    # Past due (a renewal being retried): the plan's dunning policy says what stays usable.
    kept = (
        past_due_kept_features(subscription=subscription)
        if subscription.status == Subscription.Status.PAST_DUE
        else frozenset()
    )
    if kept is None:
        return
    services.entitlement_suspend_for_subscription(subscription=subscription, keep_feature_codes=kept)


def on_subscription_grace_extended(
    sender: Any, *, subscription: Subscription, until: datetime, **kwargs: Any
) -> None:
    services.entitlement_extend_until(subscription=subscription, until=until)


def on_subscription_reactivated(sender: Any, *, subscription: Subscription, **kwargs: Any) -> None:
    services.entitlement_restore_for_subscription(subscription=subscription)


def on_subscription_cancelled(sender: Any, *, subscription: Subscription, **kwargs: Any) -> None:
    services.entitlement_revoke_for_subscription(subscription=subscription)


def on_subscription_plan_changed(sender: Any, *, subscription: Subscription, **kwargs: Any) -> None:
    services.entitlement_replace_plan_for_subscription(subscription=subscription)


def on_payment_succeeded(sender: Any, *, payment: Payment, **kwargs: Any) -> None:
    """A one-time purchase of a plan grants its features, keyed by the PaymentIntent."""
    if payment.plan is not None and payment.stripe_payment_intent_id:
        services.entitlement_grant_one_time(
            user=payment.user, plan=payment.plan, source_ref=payment.stripe_payment_intent_id
        )


def on_payment_refunded(
    sender: Any, *, payment: Payment, revoke_entitlements: bool = False, **kwargs: Any
) -> None:
    """Staff chose to take back what the refunded payment bought."""
    if revoke_entitlements and payment.stripe_payment_intent_id:
        services.entitlement_revoke_one_time(source_ref=payment.stripe_payment_intent_id)


def on_feature_changed(sender: Any, **kwargs: Any) -> None:
    """A feature added or removed: this process re-reads the known codes on the next check."""
    feature_codes_forget()


# --- cache upkeep for writes that bypass the services (admin forms, cascades) -----------------------
# The services invalidate what they change themselves (they use queryset updates, which send no
# signal); these catch a row saved or deleted one by one anywhere else, so a staff edit in the admin
# is seen on the very next check too.


def on_entitlement_written(sender: Any, *, instance: Entitlement, **kwargs: Any) -> None:
    snapshot_invalidate_on_commit(
        user_ids=services.holders_of(user_ids=[instance.user_id], family_ids=[instance.family_id])
    )


def on_family_member_changed(sender: Any, *, family: Family, user_id: int, **kwargs: Any) -> None:
    """A member joined or left: their checks and (through the family) everyone still in it change."""
    snapshot_invalidate_on_commit(user_ids=services.holders_of(user_ids=[user_id], family_ids=[family.pk]))
