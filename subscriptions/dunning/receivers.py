"""Dunning listens to its own app's domain signals: a subscription that ended stops its dunning."""

from __future__ import annotations

from typing import Any

from subscriptions.dunning.services import dunning_cases_stop_for_subscription
from subscriptions.models import Subscription


def on_subscription_cancelled(sender: Any, *, subscription: Subscription, **kwargs: Any) -> None:
    # Dunning's own cancellation closes its case first; this catches every other ending (the
    # customer, staff, Stripe's dashboard): no retry after it, and the open invoice is voided.
    dunning_cases_stop_for_subscription(subscription=subscription, reason="subscription cancelled")


def on_subscription_cancel_requested(sender: Any, *, subscription: Subscription, **kwargs: Any) -> None:
    dunning_cases_stop_for_subscription(subscription=subscription, reason="the customer cancelled")
