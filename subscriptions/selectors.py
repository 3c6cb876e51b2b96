"""Reads of subscriptions: what a caller may see, and whether a subscription gives access now."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from subscriptions.models import Subscription
from subscriptions.transitions import GIVES_ACCESS


def subscription_list(*, user: Any) -> QuerySet[Subscription]:
    """`user`'s subscriptions, newest first."""
    return (
        Subscription.objects.filter(user=user)
        .select_related("plan", "pricing_zone")
        .order_by("-created_at", "-pk")
    )


def subscription_access_until(*, subscription: Subscription) -> datetime | None:
    """When access ends if Stripe says nothing more: the trial's end, else the period's end."""
    if subscription.status not in GIVES_ACCESS:
        return None
    if subscription.status == Subscription.Status.TRIALING and subscription.trial_end is not None:
        return subscription.trial_end
    return subscription.current_period_end


def subscription_has_access(*, subscription: Subscription, at: datetime | None = None) -> bool:
    until = subscription_access_until(subscription=subscription)
    return until is not None and (at or timezone.now()) < until
