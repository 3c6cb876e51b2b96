"""The inbound Stripe event inbox: each verified delivery (billing.stripe.verification) is recorded once per
Stripe event id and processed off the request path, in a Celery task, with retries.

Processing never waits on Stripe inside a transaction. First, outside any transaction, dj-stripe's
own receivers re-read the object from Stripe (so an old or out-of-order delivery applies Stripe's
*current* state, never a stale one) and refresh its mirror, and our handlers' `fetch`es read what
else they need. Then one short transaction records dj-stripe's Event (its unique Stripe id makes a
second run a no-op), runs our handlers (billing.payments.stripe_handlers,
subscriptions.stripe_handlers; billing.stripe.handlers) and marks the row done: a failure there rolls
all of our writes back, and the retry reads Stripe again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from celery import current_app
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from djstripe.models import Event, WebhookEndpoint, WebhookEventTrigger

from billing.stripe import publisher
from billing.stripe.handlers import stripe_event_handlers
from billing.stripe.models import StripeEvent
from payments_project.accounts.services import audit_record
from payments_project.db import prepared_cursor
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


# The intake's write: on PostgreSQL one statement (autocommit: durable when it returns) that checks
# the endpoint still has the secret and tolerance the delivery was verified with, records the
# delivery as dj-stripe's WebhookEventTrigger (processing reads the body from it, staff see every
# delivery) and upserts the inbox row. In the SET clause, columns name the row as it was.
_INBOX_UPSERT = """
    ON CONFLICT (stripe_event_id) DO UPDATE SET
        deliveries = {table}.deliveries + 1,
        trigger_id = CASE WHEN {table}.status IN (%s, %s)
                     THEN excluded.trigger_id ELSE {table}.trigger_id END,
        status = CASE WHEN {table}.status IN (%s, %s) THEN %s ELSE {table}.status END"""
_INBOX_COLUMNS = """stripe_event_id, type, object_id, stripe_customer_id, livemode, stripe_created, status,
    attempts, deliveries, last_error, trigger_id, received_at"""
_DELIVERY_RECORD = """
    WITH endpoint AS (
        SELECT id, djstripe_owner_account_id FROM {endpoints}
        WHERE djstripe_uuid = %s AND secret = %s AND djstripe_tolerance = %s
    ), delivery AS (
        INSERT INTO {triggers} (remote_ip, headers, body, valid, processed, exception, traceback,
            djstripe_version, created, updated, stripe_trigger_account_id, webhook_endpoint_id)
        SELECT %s::inet, %s::jsonb, %s, true, false, '', '', %s, %s::timestamptz, %s::timestamptz,
            djstripe_owner_account_id, id
        FROM endpoint
        RETURNING id
    )
    INSERT INTO {table} ({columns})
    SELECT %s, %s, %s, %s, %s, %s::timestamptz, %s, 0, 1, '', delivery.id, %s::timestamptz FROM delivery
    {upsert}
    RETURNING id, trigger_id, (SELECT id FROM delivery)"""


@functools.cache
def _delivery_record_sql() -> str:
    inbox = StripeEvent._meta.db_table
    return _DELIVERY_RECORD.format(
        endpoints=WebhookEndpoint._meta.db_table,
        triggers=WebhookEventTrigger._meta.db_table,
        table=inbox,
        columns=_INBOX_COLUMNS,
        upsert=_INBOX_UPSERT.format(table=inbox),
    )


def _inbox_values(event: dict[str, Any], now: datetime, db: BaseDatabaseWrapper) -> list[Any]:
    """The inbox row's values for the placeholders of _INBOX_COLUMNS (trigger_id excepted)."""
    created = event.get("created")
    object_id, customer_id = stripe_event_refs(event)
    ops = db.ops
    stripe_created = datetime.fromtimestamp(created, tz=UTC) if isinstance(created, int) else None
    return [
        event["id"],
        str(event.get("type", ""))[:128],
        object_id,
        customer_id,
        bool(event.get("livemode")),
        ops.adapt_datetimefield_value(stripe_created),
        StripeEvent.Status.PENDING,
        ops.adapt_datetimefield_value(now),
    ]


@functools.cache
def _djstripe_version() -> str:
    """What dj-stripe stores with each delivery (its field's default: the installed version)."""
    return str(WebhookEventTrigger._meta.get_field("djstripe_version").get_default())


def _upsert_values() -> list[str]:
    status = StripeEvent.Status
    return [status.FAILED, status.DEAD, status.FAILED, status.DEAD, status.PENDING]


@sensitive_variables("secret")
def stripe_delivery_accept(
    *,
    endpoint_uuid: UUID,
    secret: str,
    tolerance: int,
    event: dict[str, Any],
    body: str,
    headers: dict[str, str],
    remote_ip: str,
) -> bool:
    """A verified delivery (billing.stripe.verification) to the endpoint `endpoint_uuid`: recorded
    as dj-stripe's delivery row and in the inbox (a second delivery of the same id only counts
    itself, and makes a failed or dead event pending again), its processing queued once recorded.
    Never calls Stripe.

    False, recording nothing, when the endpoint no longer has `secret` and `tolerance` (changed or
    deleted since the caller read them): the caller verified against what is no longer the endpoint.
    """
    if connection.vendor != "postgresql":
        return _delivery_accept_orm(
            endpoint_uuid=endpoint_uuid,
            secret=secret,
            tolerance=tolerance,
            event=event,
            body=body,
            headers=headers,
            remote_ip=remote_ip,
        )
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local look-up
    now = timezone.now()
    params = [
        endpoint_uuid,
        secret,
        tolerance,
        remote_ip,
        json.dumps(headers),  # cast to jsonb by the statement, as JSONField would store it
        body,
        _djstripe_version(),
        now,
        now,
        *_inbox_values(event, now, db),
        *_upsert_values(),
    ]
    # Prepared once per connection instead of parsed and planned per delivery.
    with prepared_cursor() as cursor:
        cursor.execute(_delivery_record_sql(), params)
        row = cursor.fetchone()
    if row is None:
        return False
    row_pk, row_trigger, delivery_pk = row
    # This delivery is on the row when the event is new or due to be tried again.
    if row_trigger == delivery_pk:
        _enqueue_received(row_pk)
    return True


@sensitive_variables("secret")
def _delivery_accept_orm(
    *,
    endpoint_uuid: UUID,
    secret: str,
    tolerance: int,
    event: dict[str, Any],
    body: str,
    headers: dict[str, str],
    remote_ip: str,
) -> bool:
    """stripe_delivery_accept on SQLite (`make run`), which has no INSERT in a WITH clause: the same
    rows in one transaction."""
    with transaction.atomic():
        endpoint = (
            WebhookEndpoint.objects.select_for_update()
            .filter(djstripe_uuid=endpoint_uuid, secret=secret, djstripe_tolerance=tolerance)
            .first()
        )
        if endpoint is None:
            return False
        trigger = WebhookEventTrigger.objects.create(
            headers=headers,
            body=body,
            remote_ip=remote_ip,
            webhook_endpoint=endpoint,
            stripe_trigger_account_id=endpoint.djstripe_owner_account_id,
            valid=True,
        )
        inbox = StripeEvent._meta.db_table
        values = _inbox_values(event, timezone.now(), connection)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {inbox} ({_INBOX_COLUMNS})"  # noqa: S608 - the model's table name
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 1, '', %s, %s)"
                + _INBOX_UPSERT.format(table=inbox)
                + " RETURNING id, trigger_id",
                [*values[:-1], trigger.pk, values[-1], *_upsert_values()],
            )
            row_pk, row_trigger = cursor.fetchone()
        if row_trigger == trigger.pk:
            _enqueue_received(row_pk)
    return True


def _enqueue(stripe_event_pk: int) -> None:
    transaction.on_commit(lambda: _publish(stripe_event_pk))


def _enqueue_received(stripe_event_pk: int) -> None:
    """Queue a just-received event once its row is committed (at once in autocommit): through the
    process's publisher, which sends what arrived meanwhile as one message, off the request (a
    Celery publish costs more CPU than the rest of the intake). Should the process die first, the
    sweep queues the row. Eager Celery (tests, scripts) runs it in place, as _enqueue does."""
    if current_app.conf.task_always_eager:
        _enqueue(stripe_event_pk)
    else:
        transaction.on_commit(lambda: _publish_soon(stripe_event_pk))


def _publish_soon(stripe_event_pk: int) -> None:
    """Never raises: the row is committed, so the delivery is recorded whatever happens here (an
    error would make the intake answer it as not recorded, and Stripe's retry record it twice)."""
    try:
        publisher.stripe_event_publish_soon(stripe_event_pk)
    except Exception:
        logger.warning("Stripe event %s not queued now; the sweep will", stripe_event_pk, exc_info=True)


# The processing task, named rather than imported: the task module imports these services.
PROCESS_TASK = "billing.stripe.tasks.stripe_event_process_task"


def _publish(stripe_event_pk: int) -> None:
    try:
        current_app.signature(PROCESS_TASK, args=(stripe_event_pk,)).delay()
    except Exception:
        logger.warning("could not queue Stripe event %s; the sweep will", stripe_event_pk, exc_info=True)


SWEEP_LIMIT = 500


def stripe_events_sweep() -> int:
    """Beat job: queue again what would otherwise wait forever: pending rows never queued (the
    broker was down), rows left "processing" by a worker that died, failed rows whose retries were
    lost. Processing claims each row atomically, so a row queued twice is processed once.
    Oldest first, and the lost (pending, processing) before the failed: behind a backlog of more
    than SWEEP_LIMIT stale rows, newest first would queue those again on every run and never reach
    an older row whose worker died, and failed rows waiting out their long retries would keep a
    newer lost row from its turn."""
    now = timezone.now()
    lost = StripeEvent.objects.filter(
        Q(status=StripeEvent.Status.PENDING, received_at__lt=now - _stale_pending())
        | Q(status=StripeEvent.Status.PROCESSING, started_at__lt=now - stale_processing())
    )
    ids = list(lost.order_by("received_at", "pk").values_list("pk", flat=True)[:SWEEP_LIMIT])
    if len(ids) < SWEEP_LIMIT:
        failed = StripeEvent.objects.filter(
            status=StripeEvent.Status.FAILED, started_at__lt=now - stale_processing()
        ).order_by("received_at", "pk")
        ids += failed.values_list("pk", flat=True)[: SWEEP_LIMIT - len(ids)]
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
        with actor_bound(Actor.stripe(row.stripe_event_id)):
            _process(row=row, trigger=trigger)
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


def _process(*, row: StripeEvent, trigger: WebhookEventTrigger) -> None:
    data = trigger.json_body
    event = Event.objects.filter(id=data["id"]).first()
    if event is None:
        # Outside any transaction: everything that calls Stripe.
        event = _stripe_read(data)
        fetched = [
            (handler, handler.fetch(event) if handler.fetch else None)
            for handler in stripe_event_handlers(event.type)
        ]
    else:
        fetched = []  # processed already (its Event row commits with our handlers' writes)
    with transaction.atomic():
        if event.pk is None:
            # Unique Stripe id: had another run committed this event meanwhile, this fails and the
            # retry finds it done.
            event.save()
            for handler, answer in fetched:
                handler.run(event, answer)
        WebhookEventTrigger.objects.filter(pk=trigger.pk).update(
            event=event, processed=True, exception="", traceback=""
        )
        StripeEvent.objects.filter(pk=row.pk).update(
            status=StripeEvent.Status.DONE, processed_at=timezone.now(), last_error=""
        )


def _stripe_read(data: dict[str, Any]) -> Event:
    """dj-stripe's processing minus its enclosing transaction: the Event, unsaved, and dj-stripe's
    receivers, which re-read the event's object from Stripe and refresh the mirror (each mirror
    write commits on its own: the mirror is a copy of Stripe's state, right whenever it is written).
    Must not run in a transaction: a slow Stripe would hold it open for the gateway's whole timeout."""
    event: Event = Event._create_from_stripe_object(data, api_key=settings.STRIPE_SECRET_KEY, save=False)
    event.invoke_webhook_handlers()
    return event


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
