"""Quotas under concurrency: threads on their own PostgreSQL connections never overrun a limit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from billing.models import PlanFeature
from payments_project.accounts.tests.factories import UserFactory
from payments_project.events.models import DomainEvent
from subscriptions.models import FamilyMember
from usage.models import UsageCounter, UsageThreshold
from usage.selectors import ledger_sums
from usage.services import UsageEvent, usage_events_record

START = datetime(2027, 1, 1, tzinfo=UTC)
NOW = datetime(2027, 1, 10, tzinfo=UTC)
UNITS = (1, 7, 13)


def _spend(users: list[Any], threads: int, per_thread: int) -> list[tuple[int, str, int, int | None]]:
    """Each thread records per_thread events of 1, 7 or 13 units; (quantity, status, used seen, remaining)."""
    outcomes: list[tuple[int, str, int, int | None]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker(number: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                quantity = UNITS[(number + i) % 3]
                user = users[(number + i) % len(users)]
                event = UsageEvent(
                    user_id=user.pk, feature="api_calls", idempotency_key=f"t{number}-{i}", quantity=quantity
                )
                result = usage_events_record(events=[event], now=NOW)[0]
                with lock:
                    outcomes.append(
                        (quantity, result.status + (result.code or ""), result.used or 0, result.remaining)
                    )
        finally:
            connection.close()

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return outcomes


def _check(outcomes: list[tuple[int, str, int, int | None]], subject: str) -> None:
    counter = UsageCounter.objects.get(subject=subject)
    accepted = sum(q for q, status, _, _ in outcomes if status == "recorded")
    assert (
        counter.used == accepted == ledger_sums(subject=subject, feature_code="api_calls", period_start=START)
    )
    assert counter.used <= 100
    refused = [(q, used, remaining) for q, status, used, remaining in outcomes if status != "recorded"]
    assert {status for _, status, _, _ in outcomes} <= {"recorded", "refusedquota_exceeded"}
    # Every refusal was right when it was made: the event did not fit what was left then.
    assert all(used + q > 100 and remaining == 100 - used for q, used, remaining in refused)
    assert refused  # the quota was really fought over: 16 x 12 events of 1/7/13 units exceed 100
    # Once refused, a unit of 1 only fails when the counter is full: the end state is tight.
    assert counter.used > 100 - 13


@pytest.mark.django_db(transaction=True)
def test_sixteen_threads_never_overrun_a_quota_of_100(quota: Callable[..., Any]) -> None:
    user = quota(limit=100, period_start=START)

    outcomes = _spend([user], threads=16, per_thread=12)

    _check(outcomes, f"u{user.pk}")


@pytest.mark.django_db(transaction=True)
def test_four_family_members_at_once_never_overrun_the_pool(quota: Callable[..., Any]) -> None:
    owner = quota(limit=100, family=True, period_start=START)
    members = [owner]
    for _ in range(3):
        member = UserFactory()
        FamilyMember.objects.create(family=owner.family, user=member)
        members.append(member)

    outcomes = _spend(members, threads=16, per_thread=12)

    _check(outcomes, f"f{owner.family.pk}")


@pytest.mark.django_db(transaction=True)
def test_the_same_batch_sent_by_four_threads_at_once_is_recorded_once_without_deadlock(
    quota: Callable[..., Any],
) -> None:
    # Given 30 users, each with a quota of 100, and one batch of 1,000 events over them
    users = [quota(limit=100, period_start=START) for _ in range(30)]
    batch = [
        UsageEvent(user_id=users[i % 30].pk, feature="api_calls", idempotency_key=f"k{i}", quantity=1)
        for i in range(1000)
    ]
    statuses: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(order: int) -> None:
        try:
            barrier.wait()
            # Each thread sends the events in another order: the inserts must still not deadlock.
            events = batch if order % 2 == 0 else list(reversed(batch))
            statuses.append([r.status for r in usage_events_record(events=events, now=NOW)])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    # When four threads send it at the same moment
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then no thread failed, each event was recorded by exactly one of them and counted once
    assert errors == []
    assert sum(s.count("recorded") for s in statuses) == 1000
    assert sum(s.count("duplicate") for s in statuses) == 3000
    assert sorted(UsageCounter.objects.values_list("used", flat=True)) == [33] * 20 + [34] * 10


@pytest.mark.django_db(transaction=True)
def test_a_record_kept_waiting_for_its_counter_is_stamped_when_the_counter_is_held(
    quota: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a counter that another transaction holds locked for a second, and a restamp threshold
    # of half a second (10 s in production, far below the meter windows' settle time)
    from datetime import timedelta

    from usage import services
    from usage.models import UsageRecord

    monkeypatch.setattr(services, "RESTAMP_AFTER", timedelta(seconds=0.5))
    user = quota(limit=100, period_start=START)
    usage_events_record(
        events=[UsageEvent(user_id=user.pk, feature="api_calls", idempotency_key="first")], now=NOW
    )
    locked = threading.Event()

    def holder() -> None:
        try:
            from django.db import transaction

            with transaction.atomic():
                list(UsageCounter.objects.select_for_update().filter(subject=f"u{user.pk}"))
                locked.set()
                threading.Event().wait(1.0)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    locked.wait(5)

    # When an event is recorded meanwhile (it waits for the counter)
    result = usage_events_record(
        events=[UsageEvent(user_id=user.pk, feature="api_calls", idempotency_key="second")], now=NOW
    )
    thread.join()

    # Then it was recorded, stamped after the wait rather than before it
    assert result[0].status == "recorded"
    stamped = UsageRecord.objects.get(idempotency_key="second").recorded_at
    assert stamped - NOW >= timedelta(seconds=0.9)


@pytest.mark.django_db(transaction=True)
def test_eight_threads_sending_batches_never_overrun_a_quota_of_100(quota: Callable[..., Any]) -> None:
    # given a quota of 100 and 8 threads, each with 4 batches of 6 events of 1, 7 and 13 units
    user = quota(limit=100, period_start=START)
    outcomes: list[tuple[int, str, int, int | None]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(number: int) -> None:
        try:
            barrier.wait()
            for b in range(4):
                events = [
                    UsageEvent(
                        user_id=user.pk,
                        feature="api_calls",
                        idempotency_key=f"t{number}-{b}-{i}",
                        quantity=UNITS[(number + b + i) % 3],
                    )
                    for i in range(6)
                ]
                results = usage_events_record(events=events, now=NOW)
                with lock:
                    outcomes.extend(
                        (e.quantity, r.status + (r.code or ""), r.used or 0, r.remaining)
                        for e, r in zip(events, results, strict=True)
                    )
        finally:
            connection.close()

    # when they all send at once (8 x 24 events of 7 units on average: far over 100)
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()

    # then every event was answered, and the counter is the ledger's, at most 100, refusals right
    assert len(outcomes) == 8 * 4 * 6
    _check(outcomes, f"u{user.pk}")


@pytest.mark.django_db(transaction=True)
def test_sixteen_threads_crossing_the_thresholds_at_once_announce_each_level_once(
    quota: Callable[..., Any],
) -> None:
    # given a soft quota of 100 (recorded past the limit, flagged)
    user = quota(limit=100, policy=PlanFeature.QuotaPolicy.SOFT, period_start=START)
    barrier = threading.Barrier(16)

    def worker(number: int) -> None:
        try:
            barrier.wait()
            for i in range(8):
                event = UsageEvent(user_id=user.pk, feature="api_calls", idempotency_key=f"t{number}-{i}")
                usage_events_record(events=[event], now=NOW)
        finally:
            connection.close()

    # when 16 threads record 8 units each at once: 128 units cross 80, 100 and the limit
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()

    # then every unit counted, and each level was recorded and announced exactly once
    assert UsageCounter.objects.get(subject=f"u{user.pk}").used == 128
    assert sorted(UsageThreshold.objects.values_list("level", flat=True)) == ["100", "80", "overage"]
    announced = DomainEvent.objects.filter(type="usage.threshold_reached")
    assert sorted(event.payload["level"] for event in announced) == ["100", "80", "overage"]
