"""Stripe events that drive subscriptions, handed to the subscriptions services.

They run in the webhook inbox's transaction, after dj-stripe re-read the object from Stripe;
the services ignore events older than the state already applied (`stripe_state_at`).
"""

from __future__ import annotations

from typing import Any

from djstripe.event_handlers import djstripe_receiver
from djstripe.models import Event

from billing.services.webhooks import current_object
from subscriptions.services import (
    subscription_apply_invoice_failed,
    subscription_apply_invoice_paid,
    subscription_from_checkout,
    subscription_sync_from_stripe,
)


@djstripe_receiver(
    [
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    ]
)
def on_subscription(sender: Any, event: Event, **kwargs: Any) -> None:
    subscription_sync_from_stripe(data=current_object(event), event_id=event.id, event_created=event.created)


@djstripe_receiver("invoice.payment_succeeded")
def on_invoice_paid(sender: Any, event: Event, **kwargs: Any) -> None:
    subscription_apply_invoice_paid(
        data=current_object(event), event_id=event.id, event_created=event.created
    )


@djstripe_receiver("invoice.payment_failed")
def on_invoice_failed(sender: Any, event: Event, **kwargs: Any) -> None:
    subscription_apply_invoice_failed(
        data=current_object(event), event_id=event.id, event_created=event.created
    )


@djstripe_receiver("checkout.session.completed")
def on_checkout_completed(sender: Any, event: Event, **kwargs: Any) -> None:
    session = current_object(event)
    if session.get("mode") == "subscription":
        subscription_from_checkout(data=session, event_id=event.id, event_created=event.created)
