"""Writes of payments: one-time payments and the Stripe customer (`payments`), refunds (`refunds`)."""

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
    RefundPending,
    RefundRefused,
    refund_create,
    refund_submit,
    refund_sync,
    refunds_resubmit,
    refunds_sync_for_charge,
)

__all__ = [
    "FINAL",
    "RefundPending",
    "RefundRefused",
    "customer_ensure",
    "money_validate",
    "payment_apply_intent_status",
    "payment_create",
    "payment_from_checkout",
    "payment_status_set",
    "payment_sync_from_intent",
    "plan_price_check",
    "refund_create",
    "refund_submit",
    "refund_sync",
    "refunds_resubmit",
    "refunds_sync_for_charge",
]
