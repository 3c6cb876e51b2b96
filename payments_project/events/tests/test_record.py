"""Recording events: in the caller's transaction, numbered per aggregate, validated, immutable."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from payments_project.accounts.tests.factories import UserFactory
from payments_project.events.ids import uuid7, uuid7_floor, uuid7_time
from payments_project.events.models import AggregateSequence, DomainEvent
from payments_project.events.registry import EventPayloadInvalid
from payments_project.events.services import Actor, actor_bound, event_record
from payments_project.events.tests.factories import TEST_EVENT


def _record(aggregate_id: str = "a", **kwargs: Any) -> DomainEvent | None:
    with transaction.atomic():
        return event_record(
            event_type=TEST_EVENT, aggregate_id=aggregate_id, payload={"n": 1, "note": "x"}, **kwargs
        )


def test_uuid7_ids_grow_and_carry_their_millisecond() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5000
    assert all(value.version == 7 for value in ids)
    assert uuid7_floor(uuid7_time(ids[0])) <= ids[0]


@pytest.mark.django_db
def test_an_event_is_recorded_with_its_type_version_aggregate_and_payload() -> None:
    event = _record("a-1", actor=Actor.stripe("evt_1"))

    assert event is not None
    row = DomainEvent.objects.get(pk=event.pk)
    assert (row.type, row.schema_version, row.aggregate_type, row.aggregate_id, row.sequence) == (
        "test.recorded",
        1,
        "thing",
        "a-1",
        1,
    )
    assert (row.actor_type, row.actor_id, row.payload) == ("stripe", "evt_1", {"n": 1, "note": "x"})
    assert row.published_at is None


@pytest.mark.django_db
def test_sequences_count_per_aggregate_from_one() -> None:
    for aggregate_id in ["a", "b", "a", "a", "b"]:
        _record(aggregate_id)

    rows = DomainEvent.objects.order_by("id").values_list("aggregate_id", "sequence")
    assert list(rows) == [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)]
    assert dict(AggregateSequence.objects.values_list("aggregate_id", "last_sequence")) == {"a": 3, "b": 2}


@pytest.mark.django_db
def test_a_rolled_back_change_records_nothing_and_leaves_no_gap() -> None:
    _record("a")
    with pytest.raises(RuntimeError), transaction.atomic():
        event_record(event_type=TEST_EVENT, aggregate_id="a", payload={"n": 2, "note": "gone"})
        raise RuntimeError("the change failed")
    _record("a")

    assert list(DomainEvent.objects.values_list("sequence", flat=True)) == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused() -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        event_record(event_type=TEST_EVENT, aggregate_id="a", payload={"n": 1, "note": "x"})
    assert DomainEvent.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"n": -1, "note": "x"}, "n: -1 is less than the minimum of 0"),
        ({"n": 1}, "'note' is a required property"),
        ({"n": 1, "note": "x", "extra": True}, "Additional properties are not allowed"),
        ({"n": 1, "note": "x" * 21}, "is too long"),
    ],
)
def test_a_payload_that_does_not_match_its_schema_is_refused(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(EventPayloadInvalid, match=message), transaction.atomic():
        event_record(event_type=TEST_EVENT, aggregate_id="a", payload=payload)
    assert DomainEvent.objects.count() == 0


@pytest.mark.django_db
def test_a_second_record_of_the_same_fact_is_skipped_without_a_gap() -> None:
    first = _record("a", dedupe_key="fact-1")
    second = _record("a", dedupe_key="fact-1")
    third = _record("a")

    assert first is not None and second is None and third is not None
    assert list(DomainEvent.objects.values_list("sequence", flat=True)) == [1, 2]


@pytest.mark.django_db
def test_an_event_cannot_be_changed_once_written() -> None:
    event = _record("a")
    assert event is not None

    with pytest.raises(ValueError, match="immutable"):
        event.save()
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        DomainEvent.objects.filter(pk=event.pk).update(payload={"n": 2, "note": "forged"})
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        DomainEvent.objects.filter(pk=event.pk).update(sequence=7)
    # the delivery columns are the relay's to change
    assert DomainEvent.objects.filter(pk=event.pk).update(attempts=3) == 1


@pytest.mark.django_db
def test_the_actor_is_the_one_given_else_the_bound_one_else_the_system() -> None:
    customer, staff = UserFactory(), UserFactory(is_staff=True)
    _record("a", actor=Actor.of_user(customer))
    _record("a", actor=Actor.of_user(staff))
    with actor_bound(Actor.schedule("refunds_resubmit")):
        _record("a")
    _record("a")

    assert list(DomainEvent.objects.order_by("sequence").values_list("actor_type", "actor_id")) == [
        ("user", str(customer.pk)),
        ("staff", str(staff.pk)),
        ("schedule", "refunds_resubmit"),
        ("system", ""),
    ]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_aggregate_get_distinct_gapless_sequences() -> None:
    # given eight threads, each recording five events of the same aggregate in its own transactions
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(5):
                _record("shared")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # then every number from 1 to 40 was given once, in commit (id) order
    assert errors == []
    assert list(DomainEvent.objects.order_by("sequence").values_list("sequence", flat=True)) == list(
        range(1, 41)
    )
    assert list(DomainEvent.objects.order_by("id").values_list("sequence", flat=True)) == list(range(1, 41))
