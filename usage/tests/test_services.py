from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import PlanFeature
from payments_project.errors import Conflict
from payments_project.events import ids
from payments_project.events.models import DomainEvent
from usage.models import UsageCounter, UsageRecord, UsageThreshold
from usage.selectors import ledger_sums, usage_totals
from usage.services import (
    QuotaExceeded,
    UsageEvent,
    usage_event_record,
    usage_events_record,
)

pytestmark = pytest.mark.django_db
NOW = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)
START = datetime(2027, 1, 1, tzinfo=UTC)


def _event(user: Any, key: str, quantity: int = 1, feature: str = "api_calls", **fields: Any) -> UsageEvent:
    return UsageEvent(user_id=user.pk, feature=feature, idempotency_key=key, quantity=quantity, **fields)


def _counter(user: Any, start: datetime = START, feature: str = "api_calls") -> UsageCounter:
    return UsageCounter.objects.get(subject=f"u{user.pk}", feature_code=feature, period_start=start)


def test_an_event_is_recorded_and_counted_in_the_subscription_period(quota: Callable[..., Any]) -> None:
    user = quota(limit=100, period_start=START)

    result = usage_event_record(
        event=_event(user, "k1", 5, resource_type="file", resource_size=2048), now=NOW
    )

    assert (result.status, result.used, result.remaining, result.limit) == ("recorded", 5, 95, 100)
    assert result.resets_at == datetime(2027, 2, 1, tzinfo=UTC)
    record = UsageRecord.objects.get()
    assert (record.quantity, record.resource_type, record.resource_size, record.period_start) == (
        5,
        "file",
        2048,
        START,
    )
    assert _counter(user).used == 5


def test_the_same_key_and_body_replays_and_another_body_is_refused(quota: Callable[..., Any]) -> None:
    user = quota(limit=100, period_start=START)
    first = usage_event_record(event=_event(user, "k1", 5), now=NOW)

    again = usage_event_record(event=_event(user, "k1", 5), now=NOW)
    with pytest.raises(Conflict) as reused:
        usage_event_record(event=_event(user, "k1", 6), now=NOW)

    assert (again.status, again.record_id, again.quantity) == ("duplicate", first.record_id, 5)
    assert reused.value.code == "idempotency_key_reused"
    assert _counter(user).used == 5
    assert UsageRecord.objects.count() == 1


def test_copies_of_a_recorded_key_in_a_batch_are_each_judged_by_its_record(quota: Callable[..., Any]) -> None:
    # given "job-42" recorded with 5 units
    user = quota(limit=100, period_start=START)
    first = usage_event_record(event=_event(user, "job-42", 5), now=NOW)

    # when a batch carries it with 2 units, then with 5 (the recorded body), then 2 again
    results = usage_events_record(
        events=[_event(user, "job-42", 2), _event(user, "job-42", 5), _event(user, "job-42", 2)], now=NOW
    )

    # then each copy answers as it would alone: 409 for another body, a replay for the same one
    assert [(r.status, r.code, r.record_id) for r in results] == [
        ("refused", "idempotency_key_reused", None),
        ("duplicate", None, first.record_id),
        ("refused", "idempotency_key_reused", None),
    ]
    assert (_counter(user).used, UsageRecord.objects.count()) == (5, 1)


def test_a_hard_limit_refuses_with_the_numbers_and_records_nothing(quota: Callable[..., Any]) -> None:
    user = quota(limit=10, period_start=START)
    usage_event_record(event=_event(user, "k1", 8), now=NOW)

    with pytest.raises(QuotaExceeded) as refused:
        usage_event_record(event=_event(user, "k2", 3), now=NOW)

    assert refused.value.status_code == 429
    assert refused.value.extra == {
        "limit": 10,
        "used": 8,
        "remaining": 2,
        "resets_at": datetime(2027, 2, 1, tzinfo=UTC),
    }
    assert UsageRecord.objects.count() == 1
    assert _counter(user).used == 8


def test_soft_policy_records_past_the_limit_and_flags(quota: Callable[..., Any]) -> None:
    user = quota(limit=10, policy=PlanFeature.QuotaPolicy.SOFT, period_start=START)

    results = usage_events_record(events=[_event(user, "a", 8), _event(user, "b", 5)], now=NOW)

    assert [(r.status, r.over_limit) for r in results] == [("recorded", False), ("recorded", True)]
    assert list(UsageRecord.objects.order_by("id").values_list("over_limit", flat=True)) == [False, True]
    assert _counter(user).used == 13


def test_overage_policy_refuses_past_the_allowance(quota: Callable[..., Any]) -> None:
    user = quota(limit=10, policy=PlanFeature.QuotaPolicy.OVERAGE, overage_percent=20, period_start=START)

    results = usage_events_record(
        events=[_event(user, "a", 11), _event(user, "b", 1), _event(user, "c", 1)], now=NOW
    )

    assert [(r.status, r.code) for r in results] == [
        ("recorded", None),
        ("recorded", None),
        ("refused", "quota_exceeded"),
    ]
    assert _counter(user).used == 12


def test_a_batch_answers_each_event_and_a_bad_one_loses_none(quota: Callable[..., Any]) -> None:
    user = quota(limit=100, period_start=START)
    other = quota("other_feature", limit=None, period_start=START)

    results = usage_events_record(
        events=[
            _event(user, "a", 3),
            _event(user, "b", 1, feature="no_such_feature"),
            _event(user, "c", 2, occurred_at=NOW + timedelta(hours=1)),
            _event(user, "d", 2, occurred_at=START - timedelta(days=2)),
            _event(user, "a", 3),
            _event(user, "a", 4),
            _event(user, "e", 500),
            _event(other, "a", 1000, feature="other_feature"),
        ],
        now=NOW,
    )

    assert [(r.status, r.code) for r in results] == [
        ("recorded", None),
        ("refused", "unknown_feature"),
        ("refused", "occurred_at_in_future"),
        ("refused", "occurred_at_too_old"),
        ("duplicate", None),
        ("refused", "idempotency_key_reused"),
        ("refused", "quota_exceeded"),
        ("recorded", None),
    ]
    assert _counter(user).used == 3
    assert _counter(other, feature="other_feature").used == 1000


def test_the_same_batch_replayed_three_times_shuffled_records_each_event_once(
    quota: Callable[..., Any],
) -> None:
    users = [quota(limit=1000, period_start=START) for _ in range(3)]
    events = [_event(users[i % 3], f"k{i}", 1 + i % 5) for i in range(60)]
    expected = {u.pk: sum(e.quantity for e in events if e.user_id == u.pk) for u in users}
    rng = random.Random(7)

    first = usage_events_record(events=events, now=NOW)
    replays = []
    for _ in range(3):
        shuffled = list(events)
        rng.shuffle(shuffled)
        replays.append(usage_events_record(events=shuffled, now=NOW))

    assert {r.status for r in first} == {"recorded"}
    assert all({r.status for r in replay} == {"duplicate"} for replay in replays)
    assert UsageRecord.objects.count() == 60
    for user in users:
        assert (
            _counter(user).used
            == expected[user.pk]
            == ledger_sums(subject=f"u{user.pk}", feature_code="api_calls", period_start=START)
        )


def test_family_members_draw_on_one_pool(quota: Callable[..., Any]) -> None:
    owner = quota(limit=10, family=True, period_start=START)
    from payments_project.accounts.tests.factories import UserFactory
    from subscriptions.models import FamilyMember

    member = UserFactory()
    FamilyMember.objects.create(family=owner.family, user=member)

    results = usage_events_record(
        events=[_event(owner, "a", 6), _event(member, "a", 4), _event(member, "b", 1)], now=NOW
    )

    assert [r.status for r in results] == ["recorded", "recorded", "refused"]
    counter = UsageCounter.objects.get(subject=f"f{owner.family.pk}")
    assert (counter.used, counter.family_id, counter.user_id) == (10, owner.family.pk, None)


def test_thresholds_are_recorded_once_as_domain_events(quota: Callable[..., Any]) -> None:
    user = quota(limit=10, policy=PlanFeature.QuotaPolicy.SOFT, period_start=START)

    usage_events_record(events=[_event(user, "a", 8)], now=NOW)
    usage_events_record(events=[_event(user, "b", 1)], now=NOW)
    usage_events_record(events=[_event(user, "c", 2), _event(user, "d", 5)], now=NOW)

    assert sorted(UsageThreshold.objects.values_list("level", flat=True)) == ["100", "80", "overage"]
    events = DomainEvent.objects.filter(type="usage.threshold_reached").order_by("id")
    assert [(e.payload["level"], e.payload["used"]) for e in events] == [
        ("80", 8),
        ("100", 16),
        ("overage", 16),
    ]


def test_usage_totals_sum_records_by_occurred_at(quota: Callable[..., Any]) -> None:
    user = quota(limit=None, period_start=START)
    usage_events_record(
        events=[
            _event(user, "a", 2, occurred_at=NOW - timedelta(hours=2)),
            _event(user, "b", 3, occurred_at=NOW - timedelta(minutes=1)),
        ],
        now=NOW,
    )

    totals = usage_totals(start=NOW - timedelta(hours=1), end=NOW, feature_codes=["api_calls"])

    assert [(t.user_id, t.family_id, t.feature_code, t.quantity) for t in totals] == [
        (user.pk, None, "api_calls", 3)
    ]


@pytest.mark.parametrize(
    ("anchor", "before", "after", "next_end"),
    [
        # A month end: anchored on Jan 31, February's period ends on Feb 28 (2027).
        (
            datetime(2027, 1, 31, tzinfo=UTC),
            datetime(2027, 2, 27, 23, 59, tzinfo=UTC),
            datetime(2027, 2, 28, 0, 1, tzinfo=UTC),
            datetime(2027, 3, 31, tzinfo=UTC),
        ),
        # The leap day: anchored on Jan 29 2028, the period boundary is Feb 29 2028.
        (
            datetime(2028, 1, 29, tzinfo=UTC),
            datetime(2028, 2, 28, 23, 59, tzinfo=UTC),
            datetime(2028, 2, 29, 0, 1, tzinfo=UTC),
            datetime(2028, 3, 29, tzinfo=UTC),
        ),
        # Anchored on Jan 31 2028: February ends on the leap day itself.
        (
            datetime(2028, 1, 31, tzinfo=UTC),
            datetime(2028, 2, 28, 23, 59, tzinfo=UTC),
            datetime(2028, 2, 29, 0, 0, 1, tzinfo=UTC),
            datetime(2028, 3, 31, tzinfo=UTC),
        ),
    ],
)
def test_counters_reset_at_the_period_boundary_without_a_job(
    quota: Callable[..., Any],
    anchor: datetime,
    before: datetime,
    after: datetime,
    next_end: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The thresholds crossed become domain events whose UUIDv7 ids follow the (travelled) clock:
    # the id generator's memory of the last millisecond is put back afterwards.
    monkeypatch.setattr(ids, "_last_ms", ids._last_ms)
    monkeypatch.setattr(ids, "_counter", ids._counter)
    with time_machine.travel(before, tick=False):
        user = quota(limit=5, period_start=anchor)
        usage_event_record(event=_event(user, "a", 5))
        with pytest.raises(QuotaExceeded) as full:
            usage_event_record(event=_event(user, "b", 1))
    with time_machine.travel(after, tick=False):
        fresh = usage_event_record(event=_event(user, "b", 1))

    assert full.value.extra["resets_at"] == fresh.period_start
    assert (fresh.used, fresh.remaining, fresh.resets_at) == (1, 4, next_end)
    old, new = UsageCounter.objects.order_by("period_start")
    assert (old.used, new.used) == (5, 1)  # the past period stays readable


def test_a_batch_that_fits_is_counted_at_once_and_one_that_does_not_event_by_event(
    quota: Callable[..., Any],
) -> None:
    # given 10 units, 7 of them spent by one batch that fits
    user = quota(limit=10, period_start=START)
    usage_events_record(events=[_event(user, "a", 4), _event(user, "b", 3)], now=NOW)
    counted = _counter(user)

    # when a batch of 5 more arrives (it does not fit whole)
    results = usage_events_record(
        events=[_event(user, "c", 2), _event(user, "d", 2), _event(user, "e", 1)], now=NOW
    )

    # then each of its events is taken in order while it fits, and the counter moves once per batch
    assert [(r.status, r.code, r.used, r.remaining) for r in results] == [
        ("recorded", None, 9, 1),
        ("refused", "quota_exceeded", 9, 1),
        ("recorded", None, 10, 0),
    ]
    counter = _counter(user)
    assert (counted.used, counted.seq, counted.allowance) == (7, 1, 10)
    assert (counter.used, counter.seq, counter.allowance) == (10, 2, 10)
    assert sorted(UsageRecord.objects.values_list("idempotency_key", flat=True)) == ["a", "b", "c", "e"]


def test_an_event_from_before_the_entitlement_began_is_refused_even_inside_the_grace_window(
    quota: Callable[..., Any],
) -> None:
    # given a customer who subscribed at 09:00 (their first period opens then)
    subscribed = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)
    with time_machine.travel(subscribed, tick=False):
        user = quota(limit=10, period_start=subscribed)
    now = subscribed + timedelta(minutes=5)

    # when they send an event dated 08:59 (within the hour of grace before the period) and one at 09:01
    results = usage_events_record(
        events=[
            _event(user, "before", 9, occurred_at=subscribed - timedelta(minutes=1)),
            _event(user, "after", 1, occurred_at=subscribed + timedelta(minutes=1)),
        ],
        now=now,
    )

    # then the first is refused (no period before the subscription gets a quota), the second counted
    assert [(r.status, r.code) for r in results] == [
        ("refused", "occurred_at_before_entitlement"),
        ("recorded", None),
    ]
    assert list(UsageCounter.objects.values_list("period_start", "used")) == [(subscribed, 1)]


def test_a_replay_from_another_request_names_the_first_record_and_its_period(
    quota: Callable[..., Any],
) -> None:
    # given a recorded event
    user = quota(limit=100, period_start=START)
    first = usage_event_record(event=_event(user, "k", 5), now=NOW)

    # when it is sent again
    again = usage_event_record(event=_event(user, "k", 5), now=NOW)

    # then the same record and period; the counter's numbers are not replayed (they moved on)
    assert (
        again.status,
        again.record_id,
        again.quantity,
        again.period_start,
        again.resets_at,
        again.limit,
    ) == (
        "duplicate",
        first.record_id,
        5,
        START,
        datetime(2027, 2, 1, tzinfo=UTC),
        100,
    )
    assert (again.used, again.remaining) == (None, None)


# --- a single event in one statement, on a quota this process has read (PostgreSQL) ---------------


def test_a_single_event_on_a_remembered_quota_is_one_statement(
    quota: Callable[..., Any], django_assert_num_queries: Any
) -> None:
    # given a counter of this period, made by a first event (which read the quota)
    user = quota(limit=100, period_start=START)
    usage_event_record(event=_event(user, "first", 1), now=NOW)

    # when the next event comes (in a test's transaction: inside a savepoint)
    with django_assert_num_queries(3) as captured:
        result = usage_event_record(event=_event(user, "second", 4), now=NOW)

    # then one statement proved the quota, wrote the record and counted it
    assert [query["sql"].split()[0] for query in captured.captured_queries] == [
        "SAVEPOINT",
        "WITH",
        "RELEASE",
    ]
    assert (result.status, result.used, result.remaining, result.over_limit) == ("recorded", 5, 95, False)
    assert (_counter(user).used, _counter(user).seq) == (5, 2)
    assert ledger_sums(subject=f"u{user.pk}", feature_code="api_calls", period_start=START) == 5


def test_a_batch_is_the_same_few_statements_for_10_events_or_1000(quota: Callable[..., Any]) -> None:
    # given 20 users with a quota each, and a counter of this period for each
    users = [quota(limit=10_000, period_start=START) for _ in range(20)]
    usage_events_record(events=[_event(user, "first") for user in users], now=NOW)

    # when a batch of 10 events and then one of 1,000 (over the same users) are recorded
    with CaptureQueriesContext(connection) as small:
        usage_events_record(events=[_event(users[i % 20], f"s{i}") for i in range(10)], now=NOW)
    with CaptureQueriesContext(connection) as large:
        results = usage_events_record(
            events=[_event(users[i % 20], f"l{i}", 2) for i in range(1000)], now=NOW
        )

    # then both took the same statements, whatever the number of events: read the quotas, insert
    # the records, count them in one upsert
    verbs = [query["sql"].split()[0] for query in small.captured_queries]
    assert [query["sql"].split()[0] for query in large.captured_queries] == verbs
    # (the savepoint pair is the test's transaction around the batch's atomic block)
    assert verbs == ["SELECT", "SAVEPOINT", "INSERT", "INSERT", "RELEASE"]
    assert {r.status for r in results} == {"recorded"}
    assert ledger_sums(subject=f"u{users[0].pk}", feature_code="api_calls", period_start=START) == 1 + 1 + 100


def test_a_limit_lowered_since_the_quota_was_read_is_the_one_applied(quota: Callable[..., Any]) -> None:
    # given a quota of 100 read by this process, 2 used
    from entitlements.models import Entitlement

    user = quota(limit=100, period_start=START)
    usage_event_record(event=_event(user, "first", 2), now=NOW)

    # when the limit drops to 3 behind this process's back, and an event of 2 comes
    Entitlement.objects.filter(user=user).update(limit=3)
    with pytest.raises(QuotaExceeded) as refused:
        usage_event_record(event=_event(user, "second", 2), now=NOW)

    # then the database's limit refused it, and nothing was written
    assert refused.value.extra == {
        "limit": 3,
        "used": 2,
        "remaining": 1,
        "resets_at": datetime(2027, 2, 1, tzinfo=UTC),
    }
    assert (_counter(user).used, UsageRecord.objects.count()) == (2, 1)


def test_an_entitlement_revoked_since_the_quota_was_read_records_nothing(quota: Callable[..., Any]) -> None:
    from entitlements.models import Entitlement
    from payments_project.errors import DomainError

    user = quota(limit=100, period_start=START)
    usage_event_record(event=_event(user, "first", 2), now=NOW)

    Entitlement.objects.filter(user=user).update(status=Entitlement.Status.REVOKED)
    with pytest.raises(DomainError) as refused:
        usage_event_record(event=_event(user, "second", 1), now=NOW)

    assert (refused.value.code, refused.value.status_code) == ("not_entitled", 403)
    assert (_counter(user).used, UsageRecord.objects.count()) == (2, 1)


def test_past_a_soft_limit_one_statement_records_and_flags_and_thresholds_come_once(
    quota: Callable[..., Any], django_assert_num_queries: Any
) -> None:
    # given a soft limit of 10, 12 used (the crossings made by the full path)
    user = quota(limit=10, policy=PlanFeature.QuotaPolicy.SOFT, period_start=START)
    usage_event_record(event=_event(user, "a", 7), now=NOW)
    usage_event_record(event=_event(user, "b", 5), now=NOW)

    # when one more comes, past the limit
    with django_assert_num_queries(3):
        result = usage_event_record(event=_event(user, "c", 1), now=NOW)

    # then it is recorded and flagged in the one statement; each threshold was recorded once
    assert (result.status, result.over_limit, result.used, result.remaining) == ("recorded", True, 13, 0)
    assert UsageRecord.objects.get(idempotency_key="c").over_limit is True
    assert sorted(UsageThreshold.objects.values_list("level", flat=True)) == ["100", "80", "overage"]


def test_an_event_reaching_a_threshold_is_left_to_the_full_path(quota: Callable[..., Any]) -> None:
    # given 7 of 10 used, the quota read
    user = quota(limit=10, period_start=START)
    usage_event_record(event=_event(user, "a", 7), now=NOW)

    # when an event takes it to 80%
    result = usage_event_record(event=_event(user, "b", 1), now=NOW)

    # then the warning is recorded once, as a domain event too
    assert (result.status, result.used) == ("recorded", 8)
    assert list(UsageThreshold.objects.values_list("level", flat=True)) == ["80"]
    assert DomainEvent.objects.filter(type="usage.threshold_reached").count() == 1
