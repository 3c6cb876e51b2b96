"""Stripe Checkout Sessions for a plan at the price of the buyer's pricing zone.

Most checkouts start a subscription (one per customer: see `BLOCKS_NEW_CHECKOUT`); a one-time plan
goes through the same flow in payment mode, and billing records its payment from the webhook.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from billing.catalog.models import Plan, PricingZone
from billing.catalog.selectors import plan_list, plan_quote
from billing.catalog.services import (
    PushItem,
    customer_pricing_zone,
    plan_metered_prices_ensure,
    stripe_price_ensure,
)
from billing.payments.services import customer_ensure
from billing.stripe import gateway as stripe_gateway
from payments_project.errors import Conflict, DomainError, NotFound
from payments_project.events.services import event_record
from subscriptions.events import CHECKOUT_COMPLETED, checkout_payload
from subscriptions.models import Subscription
from subscriptions.transitions import BLOCKS_NEW_CHECKOUT


def _refuse_second_subscription(*, user: Any) -> None:
    """A customer with a running subscription changes plan instead of buying a second one.

    A friendly early answer for the common mistake (a double click, a second tab), not the rule:
    the database keeps one live subscription per customer (and per family), and a second one
    Stripe still completes is cancelled and refunded when its events arrive (subscriptions.services).
    """
    current = (
        Subscription.objects.filter(user=user, status__in=BLOCKS_NEW_CHECKOUT).select_related("plan").first()
    )
    if current is not None:
        raise Conflict(
            f"You already subscribe to {current.plan.name}; change plan instead of buying another.",
            code="already_subscribed",
            extra={"subscription_id": str(current.pk)},
        )


def _expire_open_subscription_sessions(*, customer_id: str) -> None:
    """A new subscription checkout replaces the customer's open ones: each is expired at Stripe
    (it can no longer be paid), so an older tab cannot start a second subscription. One that was
    completed meanwhile cannot be expired; its subscription is handled when its events arrive."""
    gw = stripe_gateway.client()
    sessions = stripe_gateway.call(
        gw.v1.checkout.sessions.list, {"customer": customer_id, "status": "open", "limit": 100}
    )
    for session in sessions.data:
        if session.mode != "subscription":
            continue  # a one-time purchase in another tab goes on
        try:
            stripe_gateway.call(
                gw.v1.checkout.sessions.expire,
                session["id"],
                {},
                {"idempotency_key": f"expire:{session['id']}"},
            )
        except DomainError as exc:
            if exc.code != "stripe_invalid_request":
                raise


def checkout_session_create(
    *,
    user: Any,
    plan_code: str,
    country: str | None,
    zone_code: str | None,
    success_url: str,
    cancel_url: str,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A Stripe Checkout Session for `plan` at the price of the customer's pricing zone."""
    zone: PricingZone | None
    if zone_code:  # the back-office's choice (never the API's: docs/pricing-trust.md)
        zone = PricingZone.objects.filter(code=zone_code).first()
        if zone is None:
            raise NotFound(f"No pricing zone {zone_code!r}.")
    else:
        # `country` is the trusted proxy's; the customer's first purchase fixed theirs for good.
        zone = customer_pricing_zone(user=user, country=country)
    plan = plan_list(zone=zone).filter(code=plan_code).first()
    if plan is None:
        raise NotFound(f"No active plan {plan_code!r}.")
    quote = plan_quote(plan=plan, zone=zone)
    if quote is None or quote.amount == 0:
        raise DomainError(
            f"Plan {plan_code!r} is not sold in {zone.code if zone else 'the default zone'}.",
            code="not_for_sale",
        )
    if plan.interval != Plan.Interval.ONE_TIME:
        _refuse_second_subscription(user=user)
    price = stripe_price_ensure(item=PushItem(plan, quote.currency, quote.amount))
    # Usage-priced features ride on the subscription as metered items, or Stripe would record
    # their meter events and never invoice them.
    metered = plan_metered_prices_ensure(plan=plan, zone=zone, currency=quote.currency)
    customer_id = customer_ensure(user=user)
    if plan.interval != Plan.Interval.ONE_TIME:
        _expire_open_subscription_sessions(customer_id=customer_id)
    metadata = {"user_id": str(user.pk), "plan_code": plan.code, "pricing_zone": zone.code if zone else ""}
    params: dict[str, Any] = {
        "mode": "payment" if plan.interval == Plan.Interval.ONE_TIME else "subscription",
        "customer": customer_id,
        "client_reference_id": str(user.pk),
        # Stripe refuses a quantity on a metered price's line item.
        "line_items": [
            {"price": price.stripe_price_id, "quantity": 1},
            *({"price": row.stripe_price_id} for row in metered),
        ],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "metadata": metadata,
    }
    if params["mode"] == "subscription":
        params["subscription_data"] = {"metadata": metadata}
        if plan.trial_days:
            params["subscription_data"]["trial_period_days"] = plan.trial_days
    else:
        params["payment_intent_data"] = {"metadata": metadata}
    key = f"checkout:{user.pk}:{idempotency_key or uuid.uuid4().hex}"
    session = stripe_gateway.call(
        stripe_gateway.client().v1.checkout.sessions.create, params, {"idempotency_key": key}
    )
    return {
        "id": session.id,
        "url": session.url,
        "mode": params["mode"],
        "plan": plan.code,
        "amount": quote.amount,
        "currency": quote.currency,
        "zone": zone.code if zone else None,
        "metered": [
            {
                "feature": row.plan_feature.feature.code,
                "unit_amount": row.unit_amount,
                "currency": row.zone.currency,
            }
            for row in metered
        ],
    }


def checkout_completed_record(*, session: Mapping[str, Any]) -> None:
    """checkout.session.completed (either mode): announce it once per session, however many times
    Stripe's event is processed."""
    payload = checkout_payload(session)
    with transaction.atomic():
        event_record(
            event_type=CHECKOUT_COMPLETED,
            aggregate_id=payload["session_id"],
            payload=payload,
            dedupe_key=f"checkout.completed:{payload['session_id']}",
        )
