"""Billing's domain events (payments and the catalog): their types, schemas and payload builders.

Recorded by the services in billing/payments and billing/catalog, in the transaction of the change.
Money is an integer amount of minor units beside its ISO 4217 currency, as in the API.
"""

from __future__ import annotations

from typing import Any

from billing.catalog.models import Plan, Price, PricingZone
from billing.payments.models import Payment, Refund
from payments_project.events.registry import (
    amount,
    array,
    boolean,
    currency,
    event_type,
    integer,
    record,
    string,
)

_ID = 1  # ids are positive

_PAYMENT = {
    "payment_id": integer("Our payment id.", minimum=_ID),
    "user_id": integer("The customer who pays.", minimum=_ID),
    "amount": amount("The amount charged"),
    "currency": currency(),
    "status": string("The payment's status.", enum=list(Payment.Status.values)),
    "plan": string("The plan bought once with this payment, if any.", max_length=64, nullable=True),
    "order_id": string("The caller's order reference.", max_length=255),
    "stripe_payment_intent_id": string("Stripe's PaymentIntent.", max_length=255, nullable=True),
}

PAYMENT_SUCCEEDED = event_type(
    name="payment.succeeded",
    aggregate="payment",
    description="A one-time payment succeeded (Stripe's answer or event, or a staff override).",
    properties=_PAYMENT,
)
PAYMENT_FAILED = event_type(
    name="payment.failed",
    aggregate="payment",
    description="A one-time payment failed (e.g. the card was declined).",
    properties={
        **_PAYMENT,
        "failure_code": string("Stripe's decline or error code.", max_length=64),
        "failure_message": string("Stripe's message.", max_length=1000),
    },
)
PAYMENT_REFUNDED = event_type(
    name="payment.refunded",
    aggregate="payment",
    description="Part or all of a payment was refunded (by staff here, or outside, e.g. Stripe's dashboard).",
    properties={
        "payment_id": integer("Our payment id.", minimum=_ID),
        "user_id": integer("The customer refunded.", minimum=_ID),
        "refund_id": integer("Our refund id.", minimum=_ID),
        "amount": amount("This refund's amount"),
        "currency": currency(),
        "amount_refunded": amount("Everything refunded of the payment so far"),
        "payment_amount": amount("The payment's amount"),
        "reason": string("Why.", enum=list(Refund.Reason.values)),
        "status": string("The refund's status at Stripe.", enum=list(Refund.Status.values)),
        "stripe_refund_id": string("Stripe's refund.", max_length=255, nullable=True),
        "revoke_entitlements": boolean("Whether what the payment bought is taken back."),
    },
)

_FEATURE_LIMIT = record(
    "A feature of the plan and its limit.",
    {
        "feature": string("Feature code.", max_length=64),
        "limit": integer("Ceiling; null is unlimited.", nullable=True),
        "reset_period": string("When usage counts start again.", max_length=16),
    },
)
_PRICE = {
    "plan": string("Plan code.", max_length=64),
    "currency": currency(),
    "amount": amount("The list price"),
    "active": boolean("Whether the plan is sold at this price."),
}

CATALOG_PLAN_CHANGED = event_type(
    name="catalog.plan_changed",
    aggregate="plan",
    description="A plan was created or changed (its terms, features or list prices): its whole new state.",
    properties={
        "plan": string("Plan code (the aggregate id).", max_length=64),
        "name": string("Display name.", max_length=200),
        "interval": string("Billing interval.", enum=list(Plan.Interval.values)),
        "interval_count": integer("Intervals per billing period.", minimum=1),
        "trial_days": integer("Free trial length."),
        "active": boolean("Whether it is sold."),
        "is_family": boolean("Whether a family shares it."),
        "max_members": integer("Family plans: members including the owner.", nullable=True),
        "features": array("Its features.", _FEATURE_LIMIT),
        "prices": array("Its list prices.", record("A list price.", _PRICE)),
    },
)
CATALOG_PRICE_CHANGED = event_type(
    name="catalog.price_changed",
    aggregate="plan",
    description=(
        "A plan's list price in one currency was added, changed or withdrawn (ordered with the plan)."
    ),
    properties=_PRICE,
)
CATALOG_ZONE_CHANGED = event_type(
    name="catalog.zone_changed",
    aggregate="pricing_zone",
    description=(
        "A pricing zone was created or changed (currency, multiplier, rounding, countries, overrides)."
    ),
    properties={
        "zone": string("Zone code (the aggregate id).", max_length=64),
        "name": string("Display name.", max_length=200),
        "currency": currency(),
        "multiplier": string("Decimal factor applied to list prices, as text.", max_length=32),
        "rounding": string("How converted prices are rounded.", max_length=16),
        "is_default": boolean("Whether countries in no zone use it."),
        "countries": array("ISO 3166-1 alpha-2 codes.", {"type": "string", "pattern": "^[A-Z]{2}$"}),
        "prices": array(
            "Explicit prices for plans in this zone.",
            record(
                "An override.", {"plan": string("Plan code.", max_length=64), "amount": amount("The price")}
            ),
        ),
    },
)


CATALOG_PLAN_DELETED = event_type(
    name="catalog.plan_deleted",
    aggregate="plan",
    description="A plan was deleted, with its features and list prices (its last state before).",
    properties=CATALOG_PLAN_CHANGED.properties,
)
CATALOG_PRICE_DELETED = event_type(
    name="catalog.price_deleted",
    aggregate="plan",
    description="A plan's list price in one currency was deleted (ordered with the plan).",
    properties=_PRICE,
)
CATALOG_ZONE_DELETED = event_type(
    name="catalog.zone_deleted",
    aggregate="pricing_zone",
    description="A pricing zone was deleted, with its countries and overrides (its last state before).",
    properties=CATALOG_ZONE_CHANGED.properties,
)


# --- payloads ------------------------------------------------------------------------------------
def payment_payload(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": payment.pk,
        "user_id": payment.user_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "status": payment.status,
        "plan": payment.plan.code if payment.plan_id and payment.plan else None,
        "order_id": payment.order_id,
        "stripe_payment_intent_id": payment.stripe_payment_intent_id or None,
    }


def payment_failed_payload(payment: Payment) -> dict[str, Any]:
    return {
        **payment_payload(payment),
        "failure_code": payment.failure_code,
        "failure_message": payment.failure_message,
    }


def payment_refunded_payload(payment: Payment, refund: Refund) -> dict[str, Any]:
    return {
        "payment_id": payment.pk,
        "user_id": payment.user_id,
        "refund_id": refund.pk,
        "amount": refund.amount,
        "currency": refund.currency,
        "amount_refunded": payment.amount_refunded,
        "payment_amount": payment.amount,
        "reason": refund.reason,
        "status": refund.status,
        "stripe_refund_id": refund.stripe_refund_id or None,
        "revoke_entitlements": refund.revoke_entitlements,
    }


def plan_payload(plan: Plan) -> dict[str, Any]:
    return {
        "plan": plan.code,
        "name": plan.name,
        "interval": plan.interval,
        "interval_count": plan.interval_count,
        "trial_days": plan.trial_days,
        "active": plan.active,
        "is_family": plan.is_family,
        "max_members": plan.max_members,
        "features": [
            {"feature": pf.feature.code, "limit": pf.limit, "reset_period": pf.reset_period}
            for pf in plan.plan_features.select_related("feature").order_by("feature__code")
        ],
        "prices": [price_payload(price) for price in plan.prices.order_by("currency")],
    }


def price_payload(price: Price) -> dict[str, Any]:
    return {
        "plan": price.plan.code,
        "currency": price.currency,
        "amount": price.amount,
        "active": price.active,
    }


def zone_payload(zone: PricingZone) -> dict[str, Any]:
    return {
        "zone": zone.code,
        "name": zone.name,
        "currency": zone.currency,
        "multiplier": str(zone.multiplier),
        "rounding": zone.rounding,
        "is_default": zone.is_default,
        "countries": sorted(zone.countries.values_list("country", flat=True)),
        "prices": [
            {"plan": code, "amount": value}
            for code, value in zone.zone_prices.order_by("plan__code").values_list("plan__code", "amount")
        ],
    }
