"""Reads of Stripe objects as Stripe shows them now (dj-stripe's mirror), for the event handlers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from djstripe import models as djstripe_models
from djstripe.models import Event

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
