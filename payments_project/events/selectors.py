"""Reads of the outbox: the API feed, the backlog, the relays' state, an event's envelope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone

from payments_project.events.envelope import envelope, envelope_attributes
from payments_project.events.ids import uuid7_floor
from payments_project.events.models import DomainEvent, RelayHeartbeat


def event_envelope(event: DomainEvent) -> dict[str, Any]:
    """The CloudEvents envelope of a row, exactly as the relay publishes it."""
    return envelope(envelope_attributes(event), event.payload)


def _oldest_open_write_start() -> datetime | None:
    """PostgreSQL: when the oldest transaction that has written (and may yet insert events with
    ids from then on) started. Seen for the sessions of our own database role."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(xact_start) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        )
        row = cursor.fetchone()
    return row[0] if row else None


def events_feed_horizon() -> uuid.UUID:
    """The feed serves ids below this: an event committed later can never get an id below it.

    An id is made (from the writer's clock) during its transaction, so any event still to commit
    has an id at or after the start of the oldest open writing transaction; the settle margin
    covers clock differences between the app servers and the database.
    """
    settle = timedelta(seconds=settings.EVENTS_FEED_SETTLE_SECONDS)
    horizon = timezone.now()
    oldest = _oldest_open_write_start()
    if oldest is not None:
        horizon = min(horizon, oldest)
    return uuid7_floor(horizon - settle)


def events_feed(*, after: uuid.UUID | None, limit: int, types: list[str] | None = None) -> list[DomainEvent]:
    """Events in id order after the cursor `after`, up to the horizon: a consumer that follows the
    cursor sees every event once, none skipped by a transaction that committed late."""
    rows = DomainEvent.objects.filter(id__lt=events_feed_horizon())
    if after is not None:
        rows = rows.filter(id__gt=after)
    if types:
        rows = rows.filter(type__in=types)
    return list(rows.order_by("id")[:limit])


@dataclass(frozen=True)
class Backlog:
    rows: int
    oldest_created_at: datetime | None

    def oldest_age_seconds(self, now: datetime | None = None) -> float:
        if self.oldest_created_at is None:
            return 0.0
        return max(0.0, ((now or timezone.now()) - self.oldest_created_at).total_seconds())


def events_backlog() -> Backlog:
    """Rows not yet acknowledged by the broker (the partial index keeps this cheap)."""
    found = DomainEvent.objects.filter(published_at__isnull=True).aggregate(
        rows=Count("id"), oldest=Min("created_at")
    )
    return Backlog(rows=found["rows"] or 0, oldest_created_at=found["oldest"])


def relays_live() -> list[RelayHeartbeat]:
    """Relays that reported within three heartbeats."""
    window = timedelta(seconds=3 * settings.EVENTS_RELAY_HEARTBEAT_SECONDS)
    return list(
        RelayHeartbeat.objects.filter(seen_at__gte=timezone.now() - window).exclude(
            state=RelayHeartbeat.State.STOPPED
        )
    )
