"""The charges Stripe makes for subscriptions (first payment, renewals), recorded as payments.

Stripe charges a subscription by paying its invoice; each paid invoice becomes one Payment of kind
"subscription", so staff see it with the one-time payments and refund it through the same flow
(`refund_create`). Recorded from the invoice events, read as Stripe shows the invoice now.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from djstripe.models import Customer

from billing.models import Payment
from billing.money import is_currency
from payments_project.ids import int_id

logger = logging.getLogger(__name__)


def _id(value: Any) -> str:
    """A Stripe reference, expanded (an object) or not (its id)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value or "")


def _invoice_subscription_id(invoice: Mapping[str, Any]) -> str:
    """Older API versions put it on the invoice, newer ones under parent.subscription_details."""
    direct = _id(invoice.get("subscription"))
    if direct:
        return direct
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return _id(details.get("subscription"))


def _invoice_user_id(invoice: Mapping[str, Any]) -> int | None:
    """Our user behind the invoice: its Stripe customer's subscriber, else the user_id our checkout
    put in the subscription's metadata."""
    customer_id = _id(invoice.get("customer"))
    subscriber = (
        Customer.objects.filter(id=customer_id).values_list("subscriber_id", flat=True).first()
        if customer_id
        else None
    )
    if subscriber:
        return int(subscriber)
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    metadata = details.get("metadata") or (invoice.get("subscription_details") or {}).get("metadata") or {}
    user_id = str(metadata.get("user_id") or "")
    return int_id(user_id)


def _period_line(invoice: Mapping[str, Any]) -> Mapping[str, Any]:
    lines = (invoice.get("lines") or {}).get("data") or []
    return lines[0] if lines else {}


def payment_from_invoice(*, invoice: Mapping[str, Any]) -> Payment | None:
    """invoice.paid / invoice.payment_succeeded of a subscription: its charge as a Payment, once.

    Nothing is recorded for an invoice that is not paid, paid nothing (a trial's 0 invoice) or
    belongs to no subscription; a replay of the same invoice finds the row it made.
    """
    invoice_id = _id(invoice.get("id"))
    subscription_id = _invoice_subscription_id(invoice)
    amount = invoice.get("amount_paid")
    currency = str(invoice.get("currency") or "").upper()
    if not invoice_id or not subscription_id or invoice.get("status") != "paid":
        return None
    if not isinstance(amount, int) or amount <= 0 or not is_currency(currency):
        return None
    existing = Payment.objects.filter(stripe_invoice_id=invoice_id).first()
    if existing is not None:
        return existing
    user_id = _invoice_user_id(invoice)
    if user_id is None:
        logger.warning("paid invoice %s has no known customer: not recorded as a payment", invoice_id)
        return None
    intent_id = _id(invoice.get("payment_intent"))
    charge_id = _id(invoice.get("charge"))
    line = _period_line(invoice)
    period = line.get("period") or {}
    fields = {
        "user_id": user_id,
        "kind": Payment.Kind.SUBSCRIPTION,
        "amount": amount,
        "currency": currency,
        "status": Payment.Status.SUCCEEDED,
        "description": str(line.get("description") or "Subscription")[:1000],
        "idempotency_key": f"invoice:{invoice_id}"[:255],
        "stripe_customer_id": _id(invoice.get("customer"))[:255],
        "stripe_subscription_id": subscription_id[:255],
        "stripe_payment_intent_id": intent_id[:255] or None,
        "stripe_charge_id": charge_id[:255] or None,
        "metadata": {
            "invoice": invoice_id,
            "period_start": str(period.get("start") or ""),
            "period_end": str(period.get("end") or ""),
        },
    }
    payment: Payment | None
    try:
        with transaction.atomic():
            payment, _ = Payment.objects.get_or_create(stripe_invoice_id=invoice_id, defaults=fields)
    except IntegrityError:
        # The same invoice recorded concurrently (unique invoice id), or its intent or charge is
        # already another row's: keep the first, never two rows for one charge.
        payment = Payment.objects.filter(stripe_invoice_id=invoice_id).first()
        if payment is None:
            logger.error("invoice %s: its charge is already recorded on another payment", invoice_id)
    return payment


def payment_attach_charge(*, payment_id: int, charge_id: str) -> None:
    """Remember the charge behind a payment (searchable by ch_...), once."""
    if not charge_id:
        return
    try:
        with transaction.atomic():
            Payment.objects.filter(pk=payment_id, stripe_charge_id__isnull=True).update(
                stripe_charge_id=charge_id
            )
    except IntegrityError:  # already another row's (unique): that row keeps it
        logger.warning("charge %s is already recorded on another payment", charge_id)
