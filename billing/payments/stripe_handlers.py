"""What billing does with each Stripe event, once dj-stripe has verified and mirrored it.

Handlers run in the inbox's short transaction (billing.stripe.services), after dj-stripe re-read
the object from Stripe outside it; they read that current state, so duplicates and out-of-order
deliveries land on the same result. What else they need from Stripe their `fetch` reads first,
outside the transaction.
"""

from __future__ import annotations

from typing import Any

from djstripe import models as djstripe_models

from billing.catalog.services import customer_pricing_card_check
from billing.models import Payment
from billing.payments.services import (
    payment_apply_intent_status,
    payment_attach_charge,
    payment_from_checkout,
    payment_from_invoice,
    payment_sync_from_intent,
)
from billing.payments.services.refunds import (
    ChargeRefunds,
    charge_refunds_fetch,
    refund_charge_refunds_fetch,
    refunds_sync_for_charge,
)
from billing.stripe.handlers import stripe_event_handler
from billing.stripe.selectors import current_object


@stripe_event_handler(
    [
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.processing",
        "payment_intent.requires_action",
    ]
)
def on_payment_intent(event: djstripe_models.Event) -> None:
    payment_sync_from_intent(intent=current_object(event))


@stripe_event_handler("charge.succeeded")
def on_charge_succeeded(event: djstripe_models.Event) -> None:
    charge = current_object(event)
    payment = Payment.objects.filter(stripe_payment_intent_id=charge.get("payment_intent")).first()
    if payment is not None and charge.get("status") == "succeeded" and charge.get("captured", True):
        payment_attach_charge(payment_id=payment.pk, charge_id=str(charge.get("id") or ""))
        payment_apply_intent_status(payment_id=payment.pk, status=Payment.Status.SUCCEEDED)
    if charge.get("status") == "succeeded":
        _card_country_check(charge, payment)


def _card_country_check(charge: Any, payment: Payment | None) -> None:
    """The card's country against the customer's pricing country (docs/pricing-trust.md)."""
    details = charge.get("payment_method_details") or {}
    card_country = (details.get("card") or {}).get("country")
    user_id = payment.user_id if payment is not None else None
    if user_id is None and charge.get("customer"):
        user_id = (
            djstripe_models.Customer.objects.filter(id=charge.get("customer"))
            .values_list("subscriber_id", flat=True)
            .first()
        )
    if user_id is not None:
        customer_pricing_card_check(user_id=user_id, card_country=card_country)


@stripe_event_handler(["invoice.paid", "invoice.payment_succeeded"])
def on_invoice_paid(event: djstripe_models.Event) -> None:
    """A subscription's charge (first payment or renewal): listed and refundable with the others.
    What the invoice does to the subscription itself is the subscriptions app's."""
    payment_from_invoice(invoice=current_object(event))


def _charge_refunds(event: djstripe_models.Event) -> ChargeRefunds | None:
    return charge_refunds_fetch(charge=current_object(event))


@stripe_event_handler("charge.refunded", fetch=_charge_refunds)
def on_charge_refunded(event: djstripe_models.Event, fetched: ChargeRefunds | None) -> None:
    refunds_sync_for_charge(charge_refunds=fetched)


def _refund_charge_refunds(event: djstripe_models.Event) -> ChargeRefunds | None:
    return refund_charge_refunds_fetch(refund=(event.data or {}).get("object", {}))


@stripe_event_handler(
    ["refund.created", "refund.updated", "refund.failed", "charge.refund.updated"],
    fetch=_refund_charge_refunds,
)
def on_refund(event: djstripe_models.Event, fetched: ChargeRefunds | None) -> None:
    refunds_sync_for_charge(charge_refunds=fetched)


@stripe_event_handler("checkout.session.completed")
def on_checkout_completed(event: djstripe_models.Event) -> None:
    session = current_object(event)
    if session.get("mode") == "payment":
        payment_from_checkout(session=session)
    # Subscription mode is the subscriptions app's (subscriptions.stripe_handlers).
