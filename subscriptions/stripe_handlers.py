"""Stripe events that drive subscriptions, handed to the subscriptions services.

They run in the Stripe event inbox's short transaction, after dj-stripe re-read the object from
Stripe outside it; the object's state is then Stripe's current one, dated now; a payload that could
not be re-read is dated by its event, and the services ignore one older than the state applied
(`stripe_state_at`).
"""

from __future__ import annotations

from djstripe.models import Event

from billing.stripe.handlers import stripe_event_handler
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


@stripe_event_handler(
    [
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    ]
)
def on_subscription(event: Event) -> None:
    data, as_of = current_object_as_of(event)
    subscription_sync_from_stripe(data=data, event_id=event.id, event_created=as_of)


@stripe_event_handler("invoice.payment_succeeded")
def on_invoice_paid(event: Event) -> None:
    data, as_of = current_object_as_of(event)
    subscription_apply_invoice_paid(data=data, event_id=event.id, event_created=as_of)
    dunning_invoice_paid(data=data)


@stripe_event_handler("invoice.payment_failed")
def on_invoice_failed(event: Event) -> None:
    data, as_of = current_object_as_of(event)
    if data.get("status") == "paid":
        return  # a retry paid it since: this failure is history, not the current state
    subscription_apply_invoice_failed(data=data, event_id=event.id, event_created=as_of)
    dunning_invoice_failed(data=data, stripe_event_id=event.id)


@stripe_event_handler(["invoice.voided", "invoice.marked_uncollectible"])
def on_invoice_ended(event: Event) -> None:
    """Ended at Stripe (by us or in the dashboard): nothing is left to collect."""
    data, _ = current_object_as_of(event)
    dunning_invoice_ended(data=data)


@stripe_event_handler("payment_method.attached")
def on_payment_method_attached(event: Event) -> None:
    """The customer added a card: one immediate retry of their open invoices with it."""
    data, _ = current_object_as_of(event)
    dunning_new_card(
        stripe_customer_id=str(data.get("customer") or ""), payment_method=str(data.get("id") or "")
    )


@stripe_event_handler("checkout.session.completed")
def on_checkout_completed(event: Event) -> None:
    session, as_of = current_object_as_of(event)
    checkout_completed_record(session=session)  # either mode: billing records a payment's row
    if session.get("mode") == "subscription":
        subscription_from_checkout(data=session, event_id=event.id, event_created=as_of)
