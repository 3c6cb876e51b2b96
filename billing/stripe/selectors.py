"""Reads of Stripe objects as Stripe shows them now (dj-stripe's mirror), for the event handlers; and
of the event inbox, for its staff page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from djstripe import models as djstripe_models
from djstripe.models import Event

from billing.models import Payment
from billing.stripe.models import StripeEvent
from billing.stripe.services import retry_delay, stale_processing

_MIRRORS: dict[str, Any] = {
    "payment_intent": djstripe_models.PaymentIntent,
    "charge": djstripe_models.Charge,
    "checkout.session": djstripe_models.Session,
    "subscription": djstripe_models.Subscription,
    "invoice": djstripe_models.Invoice,
}


def current_object(event: Event) -> dict[str, Any]:
    """The event's object as dj-stripe last read it from Stripe (its re-fetch while processing),
    else as delivered: handlers act on Stripe's current state, not on a possibly stale payload."""
    return current_object_as_of(event)[0]


def current_object_as_of(event: Event) -> tuple[dict[str, Any], datetime]:
    """`current_object` and the time its state is from: now when re-read from Stripe during this
    processing, else the event's own creation time (the payload is as old as the event)."""
    delivered: dict[str, Any] = (event.data or {}).get("object", {})
    model = _MIRRORS.get(str(delivered.get("object")))
    if model is not None:
        mirrored = model.objects.filter(id=delivered.get("id")).values_list("stripe_data", flat=True).first()
        if mirrored:
            return dict(mirrored), timezone.now()
    return delivered, event.created


def stripe_event_next_attempt(*, row: StripeEvent) -> datetime | None:
    """When a failed event is tried again without anyone's help: its task's retry with backoff,
    or at the latest the sweep (which queues failed rows again once the stale-processing age passed).
    None when nothing will try again by itself (done, or dead: retries exhausted)."""
    if row.status != StripeEvent.Status.FAILED or row.started_at is None:
        return None
    delay = retry_delay(max(row.attempts - 1, 0))
    return row.started_at + min(delay, stale_processing())


def stripe_event_customer_user_id(*, row: StripeEvent) -> int | None:
    """Our user behind the event's Stripe customer, when we know them."""
    if not row.stripe_customer_id:
        return None
    subscriber = (
        djstripe_models.Customer.objects.filter(id=row.stripe_customer_id)
        .values_list("subscriber_id", flat=True)
        .first()
    )
    if subscriber:
        return int(subscriber)
    user_id = (
        Payment.objects.filter(stripe_customer_id=row.stripe_customer_id)
        .values_list("user_id", flat=True)
        .first()
    )
    return int(user_id) if user_id else None
