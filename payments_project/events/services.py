"""Writes of the outbox: recording an event (domain services), and the relay's claim, mark, release
and prune, each one short statement or transaction that never waits on the broker."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from payments_project.accounts.selectors import can_act_for_any_user
from payments_project.accounts.services import audit_record
from payments_project.errors import DomainError, constraint_name
from payments_project.events.ids import uuid7, uuid7_floor
from payments_project.events.models import AggregateSequence, DomainEvent, RelayHeartbeat
from payments_project.events.registry import AGGREGATE_ID_MAX, EventType

# PostgreSQL: the channel the outbox trigger notifies on insert (migration 0001); the relay listens.
NOTIFY_CHANNEL = "events_outbox"
# PostgreSQL: one claim at a time, so two relays never both see an aggregate's next row as free.
_CLAIM_LOCK_KEY = 0x6576_656E_7473  # "events"


# --- who caused an event -------------------------------------------------------------------------
@dataclass(frozen=True)
class Actor:
    type: str
    id: str = ""

    @classmethod
    def of_user(cls, user: Any) -> Actor:
        """A customer, a staff member or a service account (by its user id); nobody: the system."""
        if user is None or not getattr(user, "is_authenticated", False):
            return cls.system()
        if user.is_staff:
            kind = DomainEvent.ActorType.STAFF
        elif can_act_for_any_user(user):
            kind = DomainEvent.ActorType.SERVICE
        else:
            kind = DomainEvent.ActorType.USER
        return cls(kind, str(user.pk))

    @classmethod
    def customer(cls, user_id: int) -> Actor:
        return cls(DomainEvent.ActorType.USER, str(user_id))

    @classmethod
    def stripe(cls, event_id: str) -> Actor:
        return cls(DomainEvent.ActorType.STRIPE, event_id[:255])

    @classmethod
    def schedule(cls, job: str) -> Actor:
        return cls(DomainEvent.ActorType.SCHEDULE, job[:255])

    @classmethod
    def system(cls, what: str = "") -> Actor:
        return cls(DomainEvent.ActorType.SYSTEM, what[:255])


_current_actor: ContextVar[Actor | None] = ContextVar("events_actor", default=None)


@contextlib.contextmanager
def actor_bound(actor: Actor) -> Iterator[None]:
    """Events recorded inside without an explicit actor are attributed to `actor` (e.g. the Stripe
    event being processed, or the beat job running)."""
    token = _current_actor.set(actor)
    try:
        yield
    finally:
        _current_actor.reset(token)


def current_actor() -> Actor:
    return _current_actor.get() or Actor.system()


# --- recording -----------------------------------------------------------------------------------
def _next_sequence(aggregate_type: str, aggregate_id: str) -> int:
    """Upsert-and-increment the aggregate's counter in one statement; the row stays locked until
    the caller's transaction ends, so concurrent writers of one aggregate queue here and their
    numbers commit in order, without gaps."""
    table = AggregateSequence._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (aggregate_type, aggregate_id, last_sequence) VALUES (%s, %s, 1) "  # noqa: S608 - table name from the model
            "ON CONFLICT (aggregate_type, aggregate_id) "
            f"DO UPDATE SET last_sequence = {table}.last_sequence + 1 RETURNING last_sequence",
            [aggregate_type, aggregate_id],
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def event_record(
    *,
    event_type: EventType,
    aggregate_id: str | int,
    payload: Mapping[str, Any],
    actor: Actor | None = None,
    occurred_at: datetime | None = None,
    dedupe_key: str | None = None,
) -> DomainEvent | None:
    """Record one event in the caller's transaction: it commits or rolls back with the change.

    `dedupe_key` names the fact for services that may run twice for it (a Stripe event processed
    again): the second record is skipped (None) and leaves no gap in the aggregate's sequence.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("event_record must run inside the transaction that makes the change")
    key = str(aggregate_id)
    if not key or len(key) > AGGREGATE_ID_MAX:
        raise ValueError(f"aggregate id must be 1 to {AGGREGATE_ID_MAX} characters, got {key!r}")
    data = dict(payload)
    if settings.EVENTS_VALIDATE_PAYLOADS:
        event_type.validate(data)
    who = actor or current_actor()
    fields = {
        "type": event_type.name,
        "schema_version": event_type.version,
        "aggregate_type": event_type.aggregate,
        "aggregate_id": key,
        "occurred_at": occurred_at or timezone.now(),
        "actor_type": who.type,
        "actor_id": who.id,
        "payload": data,
        "dedupe_key": dedupe_key[:255] if dedupe_key else None,
    }
    if not dedupe_key:
        return _insert(fields)
    try:
        with transaction.atomic():  # savepoint: the counter's increment goes back with the row
            return _insert(fields)
    except IntegrityError as exc:
        if constraint_name(exc) == "event_dedupe_key":
            return None
        raise


def _insert(fields: dict[str, Any]) -> DomainEvent:
    sequence = _next_sequence(fields["aggregate_type"], fields["aggregate_id"])
    # The id after the sequence: within a process both then grow together for an aggregate.
    return DomainEvent.objects.create(id=uuid7(), sequence=sequence, **fields)


def _notify() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])


def events_publish_again(*, event_ids: Sequence[uuid.UUID | str], actor: Any, reason: str = "") -> int:
    """Staff: queue published events for publication again (a consumer lost them), audited.
    Unpublished ones are already queued and left alone. Consumers dedupe by event id."""
    if not getattr(actor, "is_staff", False):
        raise DomainError("Only staff may publish events again.", code="forbidden", status_code=403)
    with transaction.atomic():
        rows = DomainEvent.objects.select_for_update().filter(
            pk__in=list(event_ids), published_at__isnull=False
        )
        chosen = list(rows.only("pk", "type", "aggregate_type", "aggregate_id", "sequence", "published_at"))
        for row in chosen:
            audit_record(
                actor=actor,
                action="event.publish_again",
                target=row,
                reason=reason,
                data={
                    "type": row.type,
                    "aggregate": f"{row.aggregate_type}:{row.aggregate_id}",
                    "sequence": row.sequence,
                    "published_at": row.published_at.isoformat() if row.published_at else None,
                },
            )
        updated = DomainEvent.objects.filter(pk__in=[row.pk for row in chosen]).update(
            published_at=None, claimed_by="", lease_until=None, last_error=""
        )
        _notify()
    return updated


# --- the relay's side ----------------------------------------------------------------------------
class ClaimedEvent(NamedTuple):
    id: uuid.UUID
    type: str
    schema_version: int
    aggregate_type: str
    aggregate_id: str
    sequence: int
    occurred_at: datetime
    actor_type: str
    actor_id: str
    payload_json: str


def _ready_sql(table: str) -> str:
    # LIMIT keeps this a per-candidate probe of the partial aggregate index; written as NOT EXISTS,
    # PostgreSQL hashed every unpublished row once per claim (a 100,000-row backlog cost 70 ms a
    # batch). SQLite has no LATERAL: _ready_sql_portable.
    return f"""
            SELECT c.id FROM cand c
            LEFT JOIN LATERAL (
                SELECT 1 AS found FROM {table} p
                WHERE p.aggregate_type = c.aggregate_type AND p.aggregate_id = c.aggregate_id
                  AND p.sequence < c.sequence AND p.published_at IS NULL
                  AND p.id NOT IN (SELECT id FROM cand)
                  AND NOT (p.claimed_by = %(me)s AND p.lease_until >= %(now)s)
                LIMIT 1
            ) earlier ON TRUE
            WHERE earlier.found IS NULL"""  # noqa: S608 - table name from the model


def _ready_sql_portable(table: str) -> str:
    return f"""
            SELECT c.id FROM cand c WHERE NOT EXISTS (
                SELECT 1 FROM {table} p
                WHERE p.aggregate_type = c.aggregate_type AND p.aggregate_id = c.aggregate_id
                  AND p.sequence < c.sequence AND p.published_at IS NULL
                  AND p.id NOT IN (SELECT id FROM cand)
                  AND NOT (p.claimed_by = %(me)s AND p.lease_until >= %(now)s)
            )"""  # noqa: S608 - table name from the model


def _claim_sql(payload_column: str, *, postgres: bool) -> str:
    table = DomainEvent._meta.db_table
    # A row is claimable when unpublished and its lease is free (or ours). Of the oldest
    # claimable rows, take those whose every earlier unpublished row of the same aggregate is
    # among them or already ours: an aggregate's rows are taken as a prefix in sequence order, and
    # never while another relay holds an earlier one, so per-aggregate order holds across relays.
    return f"""
        WITH cand AS (
            SELECT id, aggregate_type, aggregate_id, sequence FROM {table}
            WHERE published_at IS NULL
              AND (lease_until IS NULL OR lease_until < %(now)s OR claimed_by = %(me)s)
            ORDER BY id
            LIMIT %(limit)s
        )
        UPDATE {table} SET claimed_by = %(me)s, lease_until = %(until)s, attempts = attempts + 1
        WHERE id IN ({_ready_sql(table) if postgres else _ready_sql_portable(table)})
        RETURNING id, type, schema_version, aggregate_type, aggregate_id, sequence, occurred_at,
                  actor_type, actor_id, {payload_column}
    """  # noqa: S608 - table and column names from the model, values as parameters


def events_claim(*, relay_id: str, limit: int, lease: timedelta) -> list[ClaimedEvent]:
    """Lease up to `limit` rows to `relay_id` until now + `lease`; sorted in publishing order
    (per aggregate by sequence). One short transaction."""
    now = timezone.now()
    ops = connection.ops
    params = {
        "me": relay_id,
        "now": ops.adapt_datetimefield_value(now),
        "until": ops.adapt_datetimefield_value(now + lease),
        "limit": limit,
    }
    postgres = connection.vendor == "postgresql"
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CLAIM_LOCK_KEY])
        cursor.execute(_claim_sql("payload::text" if postgres else "payload", postgres=postgres), params)
        rows = cursor.fetchall()
    claimed = [
        ClaimedEvent(
            id=row[0] if isinstance(row[0], uuid.UUID) else uuid.UUID(str(row[0])),
            type=row[1],
            schema_version=int(row[2]),
            aggregate_type=row[3],
            aggregate_id=row[4],
            sequence=int(row[5]),
            occurred_at=_aware(row[6]),
            actor_type=row[7],
            actor_id=row[8],
            payload_json=row[9] if isinstance(row[9], str) else bytes(row[9]).decode(),
        )
        for row in rows
    ]
    claimed.sort(key=lambda e: (e.aggregate_type, e.aggregate_id, e.sequence))
    return claimed


def _aware(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite hands raw SQL datetimes back as text
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def events_mark_published(*, relay_id: str, event_ids: Sequence[uuid.UUID]) -> int:
    """The broker acknowledged these: published (by `relay_id`), lease over."""
    if not event_ids:
        return 0
    if connection.vendor == "postgresql":
        # One array parameter: Django's `IN (%s, %s, ...)` of a 1,000-row batch spent a third of
        # the marking's time composing and parsing the statement.
        table = DomainEvent._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"""UPDATE {table} SET published_at = %s, claimed_by = %s, lease_until = NULL,
                       last_error = '', publish_count = publish_count + 1
                    WHERE id = ANY(%s) AND published_at IS NULL""",  # noqa: S608 - model's table
                [timezone.now(), relay_id, list(event_ids)],
            )
            return int(cursor.rowcount)
    return DomainEvent.objects.filter(pk__in=list(event_ids), published_at__isnull=True).update(
        published_at=timezone.now(),
        claimed_by=relay_id,
        lease_until=None,
        last_error="",
        publish_count=F("publish_count") + 1,
    )


def events_release(*, relay_id: str, event_ids: Sequence[uuid.UUID], error: str) -> int:
    """The broker did not acknowledge these: free them at once for the next attempt."""
    if not event_ids:
        return 0
    return DomainEvent.objects.filter(
        pk__in=list(event_ids), claimed_by=relay_id, published_at__isnull=True
    ).update(claimed_by="", lease_until=None, last_error=error[:1000])


def events_prune(*, older_than: timedelta, batch: int = 5000) -> int:
    """Delete rows published longer than `older_than` ago, in batches (short transactions).
    Aggregate counters stay, so an aggregate's numbering never starts again."""
    cutoff = timezone.now() - older_than
    # Published before the cutoff implies made before it: the primary key (time-ordered ids)
    # bounds the scan, so no index on published_at is needed.
    candidates = DomainEvent.objects.filter(pk__lt=uuid7_floor(cutoff), published_at__lt=cutoff)
    total = 0
    while True:
        ids = list(candidates.values_list("pk", flat=True)[:batch])
        if not ids:
            return total
        total += DomainEvent.objects.filter(pk__in=ids).delete()[0]


def relay_heartbeat(
    *, relay_id: str, state: str, started_at: datetime, published: int, errors: int, last_error: str = ""
) -> None:
    RelayHeartbeat.objects.update_or_create(
        relay_id=relay_id,
        defaults={
            "state": state,
            "started_at": started_at,
            "seen_at": timezone.now(),
            "published": published,
            "errors": errors,
            "last_error": last_error[:1000],
        },
    )


def relay_heartbeats_prune(*, older_than: timedelta) -> int:
    return RelayHeartbeat.objects.filter(seen_at__lt=timezone.now() - older_than).delete()[0]
