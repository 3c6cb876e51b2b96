"""The webhook inbox: dj-stripe verifies each delivery; we record it once per Stripe event id and
process it off the request path, in a Celery task, with retries.

Processing is dj-stripe's `Event.process`: it re-reads the object from Stripe (so an old or
out-of-order delivery applies Stripe's *current* state, never a stale one), mirrors it into
dj-stripe's tables, then sends the per-type signal that our handlers (billing.webhook_handlers,
subscriptions.webhook_handlers) receive, all in one transaction: a failure rolls all of it back.
"""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from djstripe import models as djstripe_models
from djstripe.models import Event, WebhookEventTrigger

from billing.models import WebhookEvent

logger = logging.getLogger(__name__)

# A row left "processing" this long ago belongs to a worker that died: it may be claimed again.
STALE_PROCESSING = timedelta(minutes=10)


_MIRRORS: dict[str, Any] = {
    "payment_intent": djstripe_models.PaymentIntent,
    "charge": djstripe_models.Charge,
    "checkout.session": djstripe_models.Session,
    "subscription": djstripe_models.Subscription,
    "invoice": djstripe_models.Invoice,
}


class WebhookProcessingFailed(Exception):
    pass


def webhook_trigger_accept(trigger: WebhookEventTrigger, api_key: str | None = None) -> None:
    """A verified delivery: record the event in the inbox (a second delivery of the same id only
    counts itself) and enqueue its processing after commit. Never calls Stripe."""
    body = trigger.json_body
    created = body.get("created")
    row, is_new = WebhookEvent.objects.get_or_create(
        stripe_event_id=body["id"],
        defaults={
            "type": str(body.get("type", ""))[:128],
            "livemode": bool(body.get("livemode")),
            "stripe_created": datetime.fromtimestamp(created, tz=UTC) if isinstance(created, int) else None,
            "trigger": trigger,
        },
    )
    if not is_new:
        WebhookEvent.objects.filter(pk=row.pk).update(deliveries=F("deliveries") + 1)
        # A redelivery of an event that failed (or died) is a reason to try again now.
        retry = WebhookEvent.objects.filter(
            pk=row.pk, status__in=[WebhookEvent.Status.FAILED, WebhookEvent.Status.DEAD]
        ).update(status=WebhookEvent.Status.PENDING, trigger=trigger)
        if not retry:
            return
    _enqueue(row.pk)


def _enqueue(webhook_event_id: int) -> None:
    transaction.on_commit(lambda: _publish(webhook_event_id))


def _publish(webhook_event_id: int) -> None:
    from billing.tasks import webhook_event_process_task

    try:
        webhook_event_process_task.delay(webhook_event_id)
    except Exception:
        logger.warning("could not queue webhook event %s; the sweep will", webhook_event_id, exc_info=True)


# A pending row this old was never queued (broker down) or its message was lost.
STALE_PENDING = timedelta(minutes=2)


def webhook_events_sweep() -> int:
    """Beat job: queue again what would otherwise wait forever: pending rows never queued (the
    broker was down), rows left "processing" by a worker that died, failed rows whose retries were
    lost. Processing claims each row atomically, so a row queued twice is processed once."""
    now = timezone.now()
    stuck = WebhookEvent.objects.filter(
        Q(status=WebhookEvent.Status.PENDING, received_at__lt=now - STALE_PENDING)
        | Q(status=WebhookEvent.Status.PROCESSING, started_at__lt=now - STALE_PROCESSING)
        | Q(status=WebhookEvent.Status.FAILED, started_at__lt=now - STALE_PROCESSING)
    ).values_list("pk", flat=True)[:500]
    ids = list(stuck)
    for pk in ids:
        _publish(pk)
    return len(ids)


def webhook_event_process(*, webhook_event_id: int) -> WebhookEvent:
    """Process one inbox row; a no-op unless it is pending, failed, or stale in processing.

    Raises WebhookProcessingFailed (after recording the error) so the task retries.
    """
    now = timezone.now()
    claimed = (
        WebhookEvent.objects.filter(pk=webhook_event_id)
        .filter(
            Q(status__in=[WebhookEvent.Status.PENDING, WebhookEvent.Status.FAILED])
            | Q(status=WebhookEvent.Status.PROCESSING, started_at__lt=now - STALE_PROCESSING)
        )
        .update(status=WebhookEvent.Status.PROCESSING, attempts=F("attempts") + 1, started_at=now)
    )
    row = WebhookEvent.objects.select_related("trigger").get(pk=webhook_event_id)
    if not claimed:
        return row
    trigger = row.trigger
    try:
        if trigger is None:
            raise WebhookProcessingFailed("the delivery behind this event was deleted")
        with transaction.atomic():
            event = Event.process(trigger.json_body, api_key=settings.STRIPE_SECRET_KEY)
            WebhookEventTrigger.objects.filter(pk=trigger.pk).update(
                event=event, processed=True, exception="", traceback=""
            )
            WebhookEvent.objects.filter(pk=row.pk).update(
                status=WebhookEvent.Status.DONE, processed_at=timezone.now(), last_error=""
            )
    except Exception as exc:
        logger.warning("webhook %s %s failed: %s", row.type, row.stripe_event_id, exc)
        error = f"{type(exc).__name__}: {exc}"
        WebhookEvent.objects.filter(pk=row.pk).update(
            status=WebhookEvent.Status.FAILED, last_error=f"{error}\n\n{traceback.format_exc()}"[:20000]
        )
        if trigger is not None:
            limit = WebhookEventTrigger._meta.get_field("exception").max_length or 128
            WebhookEventTrigger.objects.filter(pk=trigger.pk).update(
                exception=error[:limit], traceback=traceback.format_exc()
            )
        raise WebhookProcessingFailed(error) from exc
    row.refresh_from_db()
    return row


def webhook_event_give_up(*, webhook_event_id: int) -> None:
    """Retries exhausted: park the row where staff see it (admin filter "dead")."""
    WebhookEvent.objects.filter(pk=webhook_event_id, status=WebhookEvent.Status.FAILED).update(
        status=WebhookEvent.Status.DEAD
    )


def webhook_event_reprocess(*, webhook_event_ids: list[int]) -> int:
    """Staff's "reprocess" action: put failed or dead events back in the queue."""
    stale = timezone.now() - STALE_PROCESSING
    ids = list(
        WebhookEvent.objects.filter(pk__in=webhook_event_ids)
        .filter(
            Q(status__in=[WebhookEvent.Status.FAILED, WebhookEvent.Status.DEAD, WebhookEvent.Status.PENDING])
            | Q(status=WebhookEvent.Status.PROCESSING, started_at__lt=stale)
        )
        .values_list("pk", flat=True)
    )
    WebhookEvent.objects.filter(pk__in=ids).update(status=WebhookEvent.Status.PENDING)
    for pk in ids:
        _enqueue(pk)
    return len(ids)


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
