"""Property: whatever the sequence of events, duplicates, reservations, releases, settlements and
period boundaries, every counter equals its ledger (records + adjustments), its holds equal the open
reservations, and a hard limit is never passed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments_project.errors import DomainError
from usage.models import UsageCounter, UsageReservation
from usage.selectors import ledger_sums
from usage.services import (
    EventResult,
    QuotaExceeded,
    UsageEvent,
    usage_events_record,
    usage_reservation_create,
    usage_reservation_release,
    usage_reservation_settle,
    usage_reservations_expire,
)

START = datetime(2027, 1, 31, tzinfo=UTC)  # month ends: Feb 28, Mar 31, Apr 30...
LIMIT = 30

steps = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 12), st.sampled_from([1, 7, 13])),
        st.tuples(
            st.just("batch"), st.lists(st.tuples(st.integers(0, 12), st.sampled_from([1, 7, 13])), max_size=6)
        ),
        st.tuples(st.just("reserve"), st.integers(0, 5), st.integers(1, 15)),
        st.tuples(st.just("settle"), st.integers(0, 5), st.integers(0, 15)),
        st.tuples(st.just("release"), st.integers(0, 5)),
        st.tuples(st.just("time"), st.integers(1, 24 * 20)),
        st.tuples(st.just("expire")),
    ),
    max_size=25,
)


def _check_invariants(user: Any) -> None:
    for counter in UsageCounter.objects.filter(subject=f"u{user.pk}"):
        assert counter.used == ledger_sums(
            subject=counter.subject, feature_code=counter.feature_code, period_start=counter.period_start
        )
        held = UsageReservation.objects.filter(
            subject=counter.subject,
            feature_code=counter.feature_code,
            period_start=counter.period_start,
            status=UsageReservation.Status.HELD,
        ).aggregate(total=Sum("quantity"))["total"]
        assert counter.reserved == (held or 0)
        assert counter.used + counter.reserved <= LIMIT


def _refusals_justified(events: list[UsageEvent], results: list[EventResult]) -> None:
    """A quota refusal is right when it is made: the event did not fit what was left."""
    for event, result in zip(events, results, strict=True):
        if result.code == "quota_exceeded":
            assert result.remaining is not None and event.quantity > result.remaining


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=steps)
def test_counters_always_equal_the_ledger(quota: Callable[..., Any], program: list[tuple[Any, ...]]) -> None:
    with transaction.atomic():
        user = quota(limit=LIMIT, period_start=START)
        now = START + timedelta(days=20)
        holds: dict[int, int] = {}
        for step in program:
            kind = step[0]
            try:
                if kind in ("event", "batch"):
                    pairs = [(step[1], step[2])] if kind == "event" else step[1]
                    events = [
                        UsageEvent(
                            user_id=user.pk, feature="api_calls", idempotency_key=f"k{key}-{q}", quantity=q
                        )
                        for key, q in pairs
                    ]
                    results = usage_events_record(events=events, now=now)
                    _refusals_justified(events, results)
                elif kind == "reserve":
                    made, _ = usage_reservation_create(
                        user_id=user.pk,
                        feature="api_calls",
                        quantity=step[2],
                        idempotency_key=f"r{step[1]}-{step[2]}",
                        ttl_seconds=3600 * 30,
                        now=now,
                    )
                    holds[step[1]] = made.pk
                elif kind == "settle" and step[1] in holds:
                    usage_reservation_settle(reservation_id=holds[step[1]], quantity=step[2], now=now)
                elif kind == "release" and step[1] in holds:
                    usage_reservation_release(reservation_id=holds[step[1]], now=now)
                elif kind == "time":
                    now += timedelta(hours=step[1])
                elif kind == "expire":
                    usage_reservations_expire(now=now)
            except QuotaExceeded as refused:
                assert kind == "reserve" and step[2] > refused.extra["remaining"]  # it did not fit
            except DomainError:
                pass  # other refusals (closed reservation, settle above the hold) change nothing
            _check_invariants(user)
        transaction.set_rollback(True)
