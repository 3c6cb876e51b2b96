"""The inbound Stripe event inbox: dj-stripe verifies each delivery; we record it once per Stripe event id and
process it off the request path, in a Celery task, with retries.

Processing is dj-stripe's `Event.process`: it re-reads the object from Stripe (so an old or
out-of-order delivery applies Stripe's *current* state, never a stale one), mirrors it into
dj-stripe's tables, then sends the per-type signal that our handlers (billing.payments.stripe_handlers,
subscriptions.stripe_handlers) receive, all in one transaction: a failure rolls all of it back.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from djstripe.models import Event, WebhookEndpoint, WebhookEventTrigger

from billing.stripe.models import StripeEvent
from payments_project.accounts.services import audit_record
from payments_project.errors import DomainError
from payments_project.events.services import Actor, actor_bound

logger = logging.getLogger(__name__)

# The processing task's retries: exponential backoff from 10 s (10 s, 20 s, ... about 21 min).
MAX_RETRIES = 8


def retry_delay(retries: int) -> timedelta:
    """How long the task waits before its retry number `retries` + 1."""
    return timedelta(seconds=10 * 2**retries)


def stale_processing() -> timedelta:
    """A row left "processing" this long ago belongs to a worker that died: it may be claimed again."""
    return timedelta(seconds=settings.STRIPE_EVENTS_STALE_PROCESSING_SECONDS)


def _stale_pending() -> timedelta:
    """A pending row this old was never queued (broker down) or its message was lost."""
    return timedelta(seconds=settings.STRIPE_EVENTS_STALE_PENDING_SECONDS)


class StripeEventFailed(Exception):
    pass


def stripe_event_refs(body: dict[str, Any]) -> tuple[str, str]:
    """(object id, customer id) an event concerns: its object's id, and the customer it belongs to
    (the object itself for customer.* events)."""
    obj = ((body or {}).get("data") or {}).get("object") or {}
    if not isinstance(obj, dict):
        return "", ""
    customer = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
    if isinstance(customer, dict):  # expanded
        customer = customer.get("id")
    return str(obj.get("id") or "")[:255], str(customer or "")[:255]


def stripe_event_accept(*, trigger: WebhookEventTrigger) -> None:
    """A verified delivery: record the event in the inbox (a second delivery of the same id only
    counts itself, and makes a failed or dead event pending again) and enqueue its processing after
    commit. Never calls Stripe. One statement: this is the whole of a webhook's database work beside
    dj-stripe's delivery row."""
    body = trigger.json_body
    created = body.get("created")
    object_id, customer_id = stripe_event_refs(body)
    table = StripeEvent._meta.db_table
    ops = connection.ops
    status = StripeEvent.Status
    stripe_created = datetime.fromtimestamp(created, tz=UTC) if isinstance(created, int) else None
    with connection.cursor() as cursor:
        # In the SET clause, columns name the row as it was (PostgreSQL and SQLite alike).
        cursor.execute(
            f"""INSERT INTO {table} (stripe_event_id, type, object_id, stripe_customer_id, livemode,
                    stripe_created, status, attempts, deliveries, last_error, trigger_id, received_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 1, '', %s, %s)
                ON CONFLICT (stripe_event_id) DO UPDATE SET
                    deliveries = {table}.deliveries + 1,
                    trigger_id = CASE WHEN {table}.status IN (%s, %s)
                                 THEN excluded.trigger_id ELSE {table}.trigger_id END,
                    status = CASE WHEN {table}.status IN (%s, %s) THEN %s ELSE {table}.status END
                RETURNING id, trigger_id""",  # noqa: S608 - the model's table name
            [
                body["id"],
                str(body.get("type", ""))[:128],
                object_id,
                customer_id,
                bool(body.get("livemode")),
                ops.adapt_datetimefield_value(stripe_created),
                status.PENDING,
                trigger.pk,
                ops.adapt_datetimefield_value(timezone.now()),
                status.FAILED,
                status.DEAD,
                status.FAILED,
                status.DEAD,
                status.PENDING,
            ],
        )
        row_pk, row_trigger = cursor.fetchone()
    # This delivery's trigger is on the row when the event is new or due to be tried again.
    if row_trigger == trigger.pk:
        _enqueue(row_pk)


def _enqueue(stripe_event_pk: int) -> None:
    transaction.on_commit(lambda: _publish(stripe_event_pk))


# The processing task, named rather than imported: the task module imports these services.
PROCESS_TASK = "billing.stripe.tasks.stripe_event_process_task"


def _publish(stripe_event_pk: int) -> None:
    try:
        current_app.signature(PROCESS_TASK, args=(stripe_event_pk,)).delay()
    except Exception:
        logger.warning("could not queue Stripe event %s; the sweep will", stripe_event_pk, exc_info=True)


def stripe_events_sweep() -> int:
    """Beat job: queue again what would otherwise wait forever: pending rows never queued (the
    broker was down), rows left "processing" by a worker that died, failed rows whose retries were
    lost. Processing claims each row atomically, so a row queued twice is processed once."""
    now = timezone.now()
    stuck = StripeEvent.objects.filter(
        Q(status=StripeEvent.Status.PENDING, received_at__lt=now - _stale_pending())
        | Q(status=StripeEvent.Status.PROCESSING, started_at__lt=now - stale_processing())
        | Q(status=StripeEvent.Status.FAILED, started_at__lt=now - stale_processing())
    ).values_list("pk", flat=True)[:500]
    ids = list(stuck)
    for pk in ids:
        _publish(pk)
    return len(ids)


def stripe_event_process(*, stripe_event_pk: int) -> StripeEvent:
    """Process one inbox row; a no-op unless it is pending, failed, or stale in processing.

    Raises StripeEventFailed (after recording the error) so the task retries.
    """
    now = timezone.now()
    claimed = (
        StripeEvent.objects.filter(pk=stripe_event_pk)
        .filter(
            Q(status__in=[StripeEvent.Status.PENDING, StripeEvent.Status.FAILED])
            | Q(status=StripeEvent.Status.PROCESSING, started_at__lt=now - stale_processing())
        )
        .update(status=StripeEvent.Status.PROCESSING, attempts=F("attempts") + 1, started_at=now)
    )
    row = StripeEvent.objects.select_related("trigger").get(pk=stripe_event_pk)
    if not claimed:
        return row
    trigger = row.trigger
    try:
        if trigger is None:
            raise StripeEventFailed("the delivery behind this event was deleted")
        # Domain events recorded while processing are attributed to this Stripe event.
        with actor_bound(Actor.stripe(row.stripe_event_id)), transaction.atomic():
            event = Event.process(trigger.json_body, api_key=settings.STRIPE_SECRET_KEY)
            WebhookEventTrigger.objects.filter(pk=trigger.pk).update(
                event=event, processed=True, exception="", traceback=""
            )
            StripeEvent.objects.filter(pk=row.pk).update(
                status=StripeEvent.Status.DONE, processed_at=timezone.now(), last_error=""
            )
    except Exception as exc:
        logger.warning("Stripe event %s %s failed: %s", row.type, row.stripe_event_id, exc)
        error = f"{type(exc).__name__}: {exc}"
        StripeEvent.objects.filter(pk=row.pk).update(
            status=StripeEvent.Status.FAILED, last_error=f"{error}\n\n{traceback.format_exc()}"[:20000]
        )
        if trigger is not None:
            limit = WebhookEventTrigger._meta.get_field("exception").max_length or 128
            WebhookEventTrigger.objects.filter(pk=trigger.pk).update(
                exception=error[:limit], traceback=traceback.format_exc()
            )
        raise StripeEventFailed(error) from exc
    row.refresh_from_db()
    return row


def stripe_event_give_up(*, stripe_event_pk: int) -> None:
    """Retries exhausted: park the row where staff see it (admin filter "dead")."""
    StripeEvent.objects.filter(pk=stripe_event_pk, status=StripeEvent.Status.FAILED).update(
        status=StripeEvent.Status.DEAD
    )


def stripe_event_reprocess(*, stripe_event_pks: list[int], actor: Any) -> int:
    """Staff's "reprocess" action: put failed or dead events back in the queue (audited)."""
    stale = timezone.now() - stale_processing()
    ids = list(
        StripeEvent.objects.filter(pk__in=stripe_event_pks)
        .filter(
            Q(status__in=[StripeEvent.Status.FAILED, StripeEvent.Status.DEAD, StripeEvent.Status.PENDING])
            | Q(status=StripeEvent.Status.PROCESSING, started_at__lt=stale)
        )
        .values_list("pk", flat=True)
    )
    with transaction.atomic():
        StripeEvent.objects.filter(pk__in=ids).update(status=StripeEvent.Status.PENDING)
        for row in StripeEvent.objects.filter(pk__in=ids):
            audit_record(actor=actor, action="stripe_event.reprocess", target=row, data={"type": row.type})
            _enqueue(row.pk)
    return len(ids)


@sensitive_variables("secret", "endpoint_id")
def webhook_endpoint_ensure(*, secret: str, base_url: str) -> Any:
    """The dj-stripe endpoint row that verifies deliveries signed with `secret`; one per secret.

    Its Stripe id is derived from the secret, so the unique constraint on `id` makes a second run
    (or a concurrent one) find the same row instead of adding another.
    """
    if not secret.startswith("whsec_"):
        raise DomainError("STRIPE_WEBHOOK_SECRET must start with whsec_", code="invalid_webhook_secret")
    endpoint_id = "we_local_" + hashlib.sha256(secret.encode()).hexdigest()[:24]
    livemode = settings.STRIPE_LIVE_MODE
    with transaction.atomic():
        endpoint, created = WebhookEndpoint.objects.get_or_create(
            id=endpoint_id,
            defaults={
                "secret": secret,
                "livemode": livemode,
                "url": base_url.rstrip("/") + "/djstripe/webhook/",
                "enabled_events": ["*"],
                "status": "enabled",
                "api_version": "",
            },
        )
        if created:
            # The URL embeds the row's uuid, known only once the row exists.
            endpoint.url = f"{base_url.rstrip('/')}/djstripe/webhook/{endpoint.djstripe_uuid}/"
            endpoint.save(update_fields=["url"])
    return endpoint
