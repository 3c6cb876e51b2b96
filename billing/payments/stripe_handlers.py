"""What billing does with each Stripe event, once dj-stripe has verified and mirrored it.

Handlers run inside the inbox task's transaction (billing.stripe.services), after dj-stripe
re-read the object from Stripe; they read that current state, so duplicates and out-of-order
deliveries land on the same result.
"""

from __future__ import annotations

from typing import Any

from djstripe import models as djstripe_models
from djstripe.event_handlers import djstripe_receiver

from billing.catalog.services import customer_pricing_card_check
from billing.models import Payment
from billing.payments.services import (
    payment_apply_intent_status,
    payment_attach_charge,
    payment_from_checkout,
    payment_from_invoice,
    payment_sync_from_intent,
    refund_sync,
    refunds_sync_for_charge,
)
from billing.stripe.selectors import current_object


@djstripe_receiver(
    [
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.processing",
        "payment_intent.requires_action",
    ]
)
def on_payment_intent(sender: Any, event: djstripe_models.Event, **kwargs: Any) -> None:
    payment_sync_from_intent(intent=current_object(event))


@djstripe_receiver("charge.succeeded")
def on_charge_succeeded(sender: Any, event: djstripe_models.Event, **kwargs: Any) -> None:
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


@djstripe_receiver(["invoice.paid", "invoice.payment_succeeded"])
def on_invoice_paid(sender: Any, event: djstripe_models.Event, **kwargs: Any) -> None:
    """A subscription's charge (first payment or renewal): listed and refundable with the others.
    What the invoice does to the subscription itself is the subscriptions app's."""
    payment_from_invoice(invoice=current_object(event))


@djstripe_receiver("charge.refunded")
def on_charge_refunded(sender: Any, event: djstripe_models.Event, **kwargs: Any) -> None:
    refunds_sync_for_charge(charge=current_object(event))


@djstripe_receiver(["refund.created", "refund.updated", "refund.failed", "charge.refund.updated"])
def on_refund(sender: Any, event: djstripe_models.Event, **kwargs: Any) -> None:
    refund_sync(refund=(event.data or {}).get("object", {}))


@djstripe_receiver("checkout.session.completed")
def on_checkout_completed(sender: Any, event: djstripe_models.Event, **kwargs: Any) -> None:
    session = current_object(event)
    if session.get("mode") == "payment":
        payment_from_checkout(session=session)
    # Subscription mode is the subscriptions app's (subscriptions.stripe_handlers).
