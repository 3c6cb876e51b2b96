"""The subscriptions app's domain events (subscriptions, checkout, families): types, schemas,
payloads, and the record helpers its services call in the transaction of each change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payments_project.events.envelope import rfc3339
from payments_project.events.registry import amount, boolean, currency, event_type, integer, string, timestamp
from payments_project.events.services import Actor, event_record
from payments_project.ids import int_id
from subscriptions.models import Family, Subscription, SubscriptionHistory

Status = Subscription.Status
_STATUS = list(Status.values)
_CAUSE = list(SubscriptionHistory.Cause.values)

_SUBSCRIPTION = {
    "subscription_id": integer("Our subscription id.", minimum=1),
    "user_id": integer("The customer who pays.", minimum=1),
    "plan": string("Plan code.", max_length=64),
    "status": string("Status now.", enum=_STATUS),
    "amount": amount("The price agreed at signup", nullable=True),
    "currency": currency(nullable=True),
    "family_id": integer("The family sharing it, if any.", minimum=1, nullable=True),
    "current_period_end": timestamp("End of the paid or trial period.", nullable=True),
    "cancel_at_period_end": boolean("Whether it ends at the period end."),
    "stripe_subscription_id": string("Stripe's subscription.", max_length=255, nullable=True),
}

SUBSCRIPTION_CREATED = event_type(
    name="subscription.created",
    aggregate="subscription",
    description="A subscription is known to us for the first time (from checkout or Stripe's events).",
    properties={**_SUBSCRIPTION, "pricing_zone": string("Pricing zone code.", max_length=64, nullable=True)},
)
SUBSCRIPTION_STATUS_CHANGED = event_type(
    name="subscription.status_changed",
    aggregate="subscription",
    description="The status moved (one row of the transition table), with what caused it.",
    properties={
        **_SUBSCRIPTION,
        "from_status": string("Status before.", enum=_STATUS),
        "to_status": string("Status after.", enum=_STATUS),
        "cause": string("What moved it.", enum=_CAUSE),
    },
)
SUBSCRIPTION_PLAN_CHANGED = event_type(
    name="subscription.plan_changed",
    aggregate="subscription",
    description="The subscription moved to another plan (upgrade or downgrade; Stripe prorates).",
    properties={**_SUBSCRIPTION, "from_plan": string("Plan code before.", max_length=64)},
)
SUBSCRIPTION_CANCEL_SCHEDULED = event_type(
    name="subscription.cancel_scheduled",
    aggregate="subscription",
    description="The subscription will end at its period end (access goes on until then).",
    properties=_SUBSCRIPTION,
)
SUBSCRIPTION_RESUMED = event_type(
    name="subscription.resumed",
    aggregate="subscription",
    description="A scheduled cancellation was undone: the subscription renews again.",
    properties=_SUBSCRIPTION,
)
SUBSCRIPTION_CANCELLED = event_type(
    name="subscription.cancelled",
    aggregate="subscription",
    description="The subscription ended (cancelled now or at its period end, or expired unpaid).",
    properties={
        **_SUBSCRIPTION,
        "from_status": string("Status before it ended.", enum=_STATUS),
        "cancelled_at": timestamp("When it ended.", nullable=True),
    },
)
CHECKOUT_COMPLETED = event_type(
    name="checkout.completed",
    aggregate="checkout_session",
    description="A customer completed a Stripe Checkout Session (a subscription or a one-time purchase).",
    properties={
        "session_id": string("Stripe's Checkout Session (the aggregate id).", max_length=255),
        "mode": string("What was bought.", enum=["subscription", "payment", "setup"]),
        "user_id": integer("The customer.", minimum=1, nullable=True),
        "plan": string("Plan code.", max_length=64, nullable=True),
        "pricing_zone": string("Pricing zone code.", max_length=64, nullable=True),
        "amount_total": amount("Amount of the session", nullable=True),
        "currency": currency(nullable=True),
        "payment_status": string("Stripe's payment status of the session.", max_length=32),
        "stripe_customer_id": string("Stripe's customer.", max_length=255, nullable=True),
        "stripe_subscription_id": string(
            "Subscription mode: Stripe's subscription.", max_length=255, nullable=True
        ),
        "stripe_payment_intent_id": string(
            "Payment mode: Stripe's PaymentIntent.", max_length=255, nullable=True
        ),
    },
)
_MEMBER = {
    "family_id": integer("The family (the aggregate id).", minimum=1),
    "user_id": integer("The member who joined or left.", minimum=1),
    "owner_id": integer("The family's owner.", minimum=1),
}
FAMILY_MEMBER_ADDED = event_type(
    name="family.member_added",
    aggregate="family",
    description="A user joined a family (the owner, when the family is created).",
    properties=_MEMBER,
)
FAMILY_MEMBER_REMOVED = event_type(
    name="family.member_removed",
    aggregate="family",
    description="A member left or was removed from a family.",
    properties=_MEMBER,
)


# --- payloads ------------------------------------------------------------------------------------
def subscription_payload(subscription: Subscription) -> dict[str, Any]:
    end = subscription.current_period_end
    return {
        "subscription_id": subscription.pk,
        "user_id": subscription.user_id,
        "plan": subscription.plan.code,
        "status": subscription.status,
        "amount": subscription.amount,
        "currency": subscription.currency or None,
        "family_id": subscription.family_id,
        "current_period_end": rfc3339(end) if end else None,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "stripe_subscription_id": subscription.stripe_subscription_id or None,
    }


def _actor(
    subscription: Subscription, *, cause: str = "", stripe_event_id: str = "", staff_user: Any = None
) -> Actor | None:
    """Who moved it: the Stripe event, the staff member, the customer; else the ambient actor."""
    if stripe_event_id:
        return Actor.stripe(stripe_event_id)
    if staff_user is not None:
        return Actor.of_user(staff_user)
    if cause == SubscriptionHistory.Cause.API:
        return Actor.customer(subscription.user_id)
    if cause in (SubscriptionHistory.Cause.SCHEDULE, SubscriptionHistory.Cause.DUNNING):
        return Actor.schedule(cause)
    return None


# --- record helpers (one call next to where each service writes its history or sends its signal) ---
def subscription_created_record(subscription: Subscription) -> None:
    zone = subscription.pricing_zone
    event_record(
        event_type=SUBSCRIPTION_CREATED,
        aggregate_id=subscription.pk,
        payload={**subscription_payload(subscription), "pricing_zone": zone.code if zone else None},
    )


def subscription_status_changed_record(
    subscription: Subscription,
    *,
    from_status: str,
    cause: str,
    stripe_event_id: str = "",
    staff_user: Any = None,
) -> None:
    """status_changed for every transition, and cancelled when the subscription ended."""
    actor = _actor(subscription, cause=cause, stripe_event_id=stripe_event_id, staff_user=staff_user)
    payload = subscription_payload(subscription)
    event_record(
        event_type=SUBSCRIPTION_STATUS_CHANGED,
        aggregate_id=subscription.pk,
        payload={**payload, "from_status": from_status, "to_status": subscription.status, "cause": cause},
        actor=actor,
    )
    if subscription.status in (Status.CANCELLED, Status.INCOMPLETE_EXPIRED):
        cancelled = subscription.cancelled_at
        event_record(
            event_type=SUBSCRIPTION_CANCELLED,
            aggregate_id=subscription.pk,
            payload={
                **payload,
                "from_status": from_status,
                "cancelled_at": rfc3339(cancelled) if cancelled else None,
            },
            actor=actor,
        )


def subscription_plan_changed_record(
    subscription: Subscription, *, from_plan_code: str, actor: Any = None
) -> None:
    event_record(
        event_type=SUBSCRIPTION_PLAN_CHANGED,
        aggregate_id=subscription.pk,
        payload={**subscription_payload(subscription), "from_plan": from_plan_code},
        actor=Actor.of_user(actor) if actor is not None else None,
    )


def subscription_cancel_flag_record(subscription: Subscription, *, actor: Any = None) -> None:
    """cancel_scheduled or resumed, by the flag the subscription now has."""
    event_record(
        event_type=SUBSCRIPTION_CANCEL_SCHEDULED
        if subscription.cancel_at_period_end
        else SUBSCRIPTION_RESUMED,
        aggregate_id=subscription.pk,
        payload=subscription_payload(subscription),
        actor=Actor.of_user(actor) if actor is not None else None,
    )


def checkout_payload(session: Mapping[str, Any]) -> dict[str, Any]:
    metadata = session.get("metadata") or {}
    user_id = str(metadata.get("user_id") or session.get("client_reference_id") or "")
    currency_code = str(session.get("currency") or "").upper()

    def stripe_id(value: Any) -> str | None:
        # Stripe sends an id, or the object when expanded.
        value = value.get("id") if isinstance(value, Mapping) else value
        return str(value)[:255] if value else None

    return {
        "session_id": str(session["id"])[:255],
        "mode": str(session.get("mode") or "payment"),
        "user_id": int_id(user_id),
        "plan": str(metadata["plan_code"])[:64] if metadata.get("plan_code") else None,
        "pricing_zone": str(metadata["pricing_zone"])[:64] if metadata.get("pricing_zone") else None,
        "amount_total": session.get("amount_total"),
        "currency": currency_code if len(currency_code) == 3 else None,
        "payment_status": str(session.get("payment_status") or "")[:32],
        "stripe_customer_id": stripe_id(session.get("customer")),
        "stripe_subscription_id": stripe_id(session.get("subscription")),
        "stripe_payment_intent_id": stripe_id(session.get("payment_intent")),
    }


def family_member_record(family: Family, *, user_id: int, added: bool, actor: Any = None) -> None:
    event_record(
        event_type=FAMILY_MEMBER_ADDED if added else FAMILY_MEMBER_REMOVED,
        aggregate_id=family.pk,
        payload={"family_id": family.pk, "user_id": user_id, "owner_id": family.owner_id},
        actor=Actor.of_user(actor) if actor is not None else None,
    )
