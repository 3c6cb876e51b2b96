"""Writes of payments: one-time payments and the Stripe customer (`payments`), subscription charges
(`subscription_charges`), refunds (`refunds`)."""

from billing.payments.services.payments import (
    FINAL,
    customer_ensure,
    money_validate,
    payment_apply_intent_status,
    payment_create,
    payment_from_checkout,
    payment_status_set,
    payment_sync_from_intent,
    plan_price_check,
)
from billing.payments.services.refunds import (
    ChargeRefunds,
    RefundPending,
    RefundRefused,
    charge_refunds_fetch,
    refund_charge_refunds_fetch,
    refund_create,
    refund_submit,
    refunds_resubmit,
    refunds_sync_for_charge,
)
from billing.payments.services.subscription_charges import payment_attach_charge, payment_from_invoice

__all__ = [
    "FINAL",
    "ChargeRefunds",
    "RefundPending",
    "RefundRefused",
    "charge_refunds_fetch",
    "customer_ensure",
    "money_validate",
    "payment_apply_intent_status",
    "payment_attach_charge",
    "payment_create",
    "payment_from_checkout",
    "payment_from_invoice",
    "payment_status_set",
    "payment_sync_from_intent",
    "plan_price_check",
    "refund_charge_refunds_fetch",
    "refund_create",
    "refund_submit",
    "refunds_resubmit",
    "refunds_sync_for_charge",
]
