"""The relay's side of the outbox: claims with a lease, in order per aggregate; marking, releasing,
pruning; staff's "publish again"."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory
from payments_project.errors import DomainError
from payments_project.events.ids import uuid7_floor
from payments_project.events.models import AggregateSequence, DomainEvent
from payments_project.events.services import (
    events_claim,
    events_mark_published,
    events_prune,
    events_publish_again,
    events_release,
)
from payments_project.events.tests.factories import AggregateSequenceFactory, DomainEventFactory

LEASE = timedelta(seconds=30)


def _rows(*spec: tuple[str, int]) -> list[DomainEvent]:
    """Rows in id order: (aggregate id, sequence) each."""
    return [DomainEventFactory(aggregate_id=aggregate, sequence=sequence) for aggregate, sequence in spec]


def _claimed(relay: str, limit: int = 100) -> list[tuple[str, int]]:
    return [(e.aggregate_id, e.sequence) for e in events_claim(relay_id=relay, limit=limit, lease=LEASE)]


@pytest.mark.django_db
def test_a_claim_leases_the_oldest_rows_in_order_per_aggregate() -> None:
    _rows(("b", 1), ("a", 1), ("b", 2), ("a", 2))

    claimed = events_claim(relay_id="r1", limit=10, lease=LEASE)

    assert [(e.aggregate_id, e.sequence) for e in claimed] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert claimed[0].payload_json.startswith("{")
    rows = DomainEvent.objects.all()
    assert {(row.claimed_by, row.attempts) for row in rows} == {("r1", 1)}
    assert all(row.lease_until is not None and row.lease_until > timezone.now() for row in rows)


@pytest.mark.django_db
def test_another_relay_skips_an_aggregate_while_an_earlier_row_is_leased() -> None:
    # given r1 holds a's first row, and a's second row and b's row were written after
    _rows(("a", 1))
    assert _claimed("r1") == [("a", 1)]
    _rows(("a", 2), ("b", 1))

    # when r2 claims, then it gets b only: a's second row waits for the first
    assert _claimed("r2") == [("b", 1)]
    # and r1 (which claims again only after publishing, or after a restart under its name) takes
    # a's rows from its own first one on
    assert _claimed("r1") == [("a", 1), ("a", 2)]


@pytest.mark.django_db
def test_a_limit_never_takes_a_row_without_the_rows_before_it() -> None:
    # given a's rows were written with ids out of their sequence order (clocks of two app servers)
    _rows(("a", 2), ("b", 1), ("a", 1))

    # when a claim may take two rows, then a's second is left for a later claim
    first = events_claim(relay_id="r1", limit=2, lease=LEASE)
    assert [(e.aggregate_id, e.sequence) for e in first] == [("b", 1)]
    events_mark_published(relay_id="r1", event_ids=[first[0].id])
    assert _claimed("r1", limit=2) == [("a", 1), ("a", 2)]


@pytest.mark.django_db
def test_a_dead_relays_rows_are_taken_over_after_its_lease() -> None:
    _rows(("a", 1), ("a", 2))
    assert _claimed("dead") == [("a", 1), ("a", 2)]
    assert _claimed("r2") == []

    with time_machine.travel(timezone.now() + LEASE + timedelta(seconds=1)):
        assert _claimed("r2") == [("a", 1), ("a", 2)]
    assert set(DomainEvent.objects.values_list("claimed_by", "attempts")) == {("r2", 2)}


@pytest.mark.django_db
def test_a_relay_restarted_under_its_name_takes_its_rows_back_at_once() -> None:
    _rows(("a", 1))
    assert _claimed("host:1") == [("a", 1)]
    assert _claimed("host:1") == [("a", 1)]


@pytest.mark.django_db
def test_acknowledged_rows_are_marked_and_the_others_released_for_the_next_claim() -> None:
    _rows(("a", 1), ("b", 1))
    first, second = events_claim(relay_id="r1", limit=10, lease=LEASE)

    assert events_mark_published(relay_id="r1", event_ids=[first.id]) == 1
    assert events_release(relay_id="r1", event_ids=[second.id], error="broker down") == 1

    published = DomainEvent.objects.get(pk=first.id)
    assert (published.claimed_by, published.lease_until, published.publish_count) == ("r1", None, 1)
    assert published.published_at is not None
    released = DomainEvent.objects.get(pk=second.id)
    assert (released.claimed_by, released.lease_until, released.last_error) == ("", None, "broker down")
    assert _claimed("r2") == [("b", 1)]


@pytest.mark.django_db
def test_pruning_deletes_only_rows_published_before_the_retention() -> None:
    now = timezone.now()

    def nine_days_ago(n: int) -> Any:  # ids of events made 9 days ago
        return uuid7_floor(now - timedelta(days=9) + timedelta(milliseconds=n))

    old = DomainEventFactory(id=nine_days_ago(1), published_at=now - timedelta(days=8))
    DomainEventFactory(id=nine_days_ago(2), published_at=now - timedelta(days=6))  # published late: kept
    DomainEventFactory(id=nine_days_ago(3), published_at=None)
    AggregateSequenceFactory(aggregate_id=old.aggregate_id, last_sequence=1)

    assert events_prune(older_than=timedelta(days=7), batch=1) == 1

    assert DomainEvent.objects.filter(pk=old.pk).exists() is False
    assert DomainEvent.objects.count() == 2
    assert AggregateSequence.objects.filter(aggregate_id=old.aggregate_id).exists()


@pytest.mark.django_db
def test_staff_publish_again_requeues_published_events_and_audits_each() -> None:
    staff = UserFactory(is_staff=True)
    published = DomainEventFactory(published_at=timezone.now(), claimed_by="r1", publish_count=1)
    pending = DomainEventFactory()

    count = events_publish_again(event_ids=[published.pk, pending.pk], actor=staff, reason="consumer lost it")

    assert count == 1
    row = DomainEvent.objects.get(pk=published.pk)
    assert (row.published_at, row.claimed_by, row.publish_count) == (None, "", 1)
    entry = AuditLogEntry.objects.get()
    assert (entry.actor_id, entry.action, entry.target_type, entry.target_id, entry.reason) == (
        staff.pk,
        "event.publish_again",
        "events.domainevent",
        str(published.pk),
        "consumer lost it",
    )
    assert entry.data["aggregate"] == f"thing:{published.aggregate_id}"


@pytest.mark.django_db
def test_a_customer_cannot_publish_again() -> None:
    published = DomainEventFactory(published_at=timezone.now())
    with pytest.raises(DomainError) as refused:
        events_publish_again(event_ids=[published.pk], actor=UserFactory())
    assert (refused.value.status_code, refused.value.code) == (403, "forbidden")
    assert DomainEvent.objects.filter(published_at__isnull=True).count() == 0
