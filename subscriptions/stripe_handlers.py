"""Stripe events that drive subscriptions, handed to the subscriptions services.

They run in the Stripe event inbox's transaction, after dj-stripe re-read the object from Stripe;
the object's state is then Stripe's current one, dated now; a payload that could not be re-read
is dated by its event, and the services ignore one older than the state applied (`stripe_state_at`).
"""

from __future__ import annotations

from typing import Any

from djstripe.event_handlers import djstripe_receiver
from djstripe.models import Event

from billing.stripe.selectors import current_object_as_of
from subscriptions.checkout.services import checkout_completed_record
from subscriptions.dunning.services import (
    dunning_invoice_ended,
    dunning_invoice_failed,
    dunning_invoice_paid,
    dunning_new_card,
)
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
    data, as_of = current_object_as_of(event)
    subscription_sync_from_stripe(data=data, event_id=event.id, event_created=as_of)


@djstripe_receiver("invoice.payment_succeeded")
def on_invoice_paid(sender: Any, event: Event, **kwargs: Any) -> None:
    data, as_of = current_object_as_of(event)
    subscription_apply_invoice_paid(data=data, event_id=event.id, event_created=as_of)
    dunning_invoice_paid(data=data)


@djstripe_receiver("invoice.payment_failed")
def on_invoice_failed(sender: Any, event: Event, **kwargs: Any) -> None:
    data, as_of = current_object_as_of(event)
    if data.get("status") == "paid":
        return  # a retry paid it since: this failure is history, not the current state
    subscription_apply_invoice_failed(data=data, event_id=event.id, event_created=as_of)
    dunning_invoice_failed(data=data, stripe_event_id=event.id)


@djstripe_receiver(["invoice.voided", "invoice.marked_uncollectible"])
def on_invoice_ended(sender: Any, event: Event, **kwargs: Any) -> None:
    """Ended at Stripe (by us or in the dashboard): nothing is left to collect."""
    data, _ = current_object_as_of(event)
    dunning_invoice_ended(data=data)


@djstripe_receiver("payment_method.attached")
def on_payment_method_attached(sender: Any, event: Event, **kwargs: Any) -> None:
    """The customer added a card: one immediate retry of their open invoices with it."""
    data, _ = current_object_as_of(event)
    dunning_new_card(
        stripe_customer_id=str(data.get("customer") or ""), payment_method=str(data.get("id") or "")
    )


@djstripe_receiver("checkout.session.completed")
def on_checkout_completed(sender: Any, event: Event, **kwargs: Any) -> None:
    session, as_of = current_object_as_of(event)
    checkout_completed_record(session=session)  # either mode: billing records a payment's row
    if session.get("mode") == "subscription":
        subscription_from_checkout(data=session, event_id=event.id, event_created=as_of)
