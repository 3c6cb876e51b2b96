from __future__ import annotations

import logging

import pytest

from subscriptions.models import LIVE_STATUSES, Subscription, SubscriptionHistory
from subscriptions.services import IllegalTransition, subscription_transition
from subscriptions.tests.factories import SubscriptionFactory
from subscriptions.transitions import ACCESS_SUSPENDED, ALLOWED, BLOCKS_NEW_CHECKOUT, RENEWAL_UNPAID

S = Subscription.Status
ALL = list(S.values)
# Every pair, with the expected outcome spelled out independently of the table.
REFUSED = {
    *((s, S.INCOMPLETE) for s in ALL if s != S.INCOMPLETE),
    *((s, S.INCOMPLETE_EXPIRED) for s in ALL if s not in (S.INCOMPLETE, S.INCOMPLETE_EXPIRED)),
    *((S.CANCELLED, s) for s in ALL if s != S.CANCELLED),
    *((S.INCOMPLETE_EXPIRED, s) for s in ALL if s != S.INCOMPLETE_EXPIRED),
    (S.INCOMPLETE, S.SUSPENDED),
}
EXPECTED_SIGNALS: dict[tuple[str, str], list[str]] = {
    (S.INCOMPLETE, S.TRIALING): ["activated"],
    (S.INCOMPLETE, S.ACTIVE): ["activated"],
    (S.INCOMPLETE, S.PAST_DUE): ["activated", "suspended"],
    (S.INCOMPLETE, S.UNPAID): ["activated", "suspended"],
    (S.INCOMPLETE, S.PAUSED): ["activated", "suspended"],
}
LIVE, SUSPENDED, ENDED = (
    {S.TRIALING, S.ACTIVE},
    {S.PAST_DUE, S.UNPAID, S.PAUSED, S.SUSPENDED},
    {
        S.CANCELLED,
        S.INCOMPLETE_EXPIRED,
    },
)


def _expected_signals(from_status: str, to_status: str) -> list[str]:
    if (from_status, to_status) in EXPECTED_SIGNALS:
        return EXPECTED_SIGNALS[(from_status, to_status)]
    if to_status in ENDED:
        return ["cancelled"]
    if to_status in LIVE and from_status in SUSPENDED:
        return ["reactivated"]
    if to_status in SUSPENDED and from_status in LIVE:
        return ["suspended"]
    return []


PAIRS = [(a, b) for a in ALL for b in ALL if a != b]


def test_table_covers_every_status_and_matches_the_refused_list() -> None:
    # given the table / when read / then exactly the complement of REFUSED is allowed
    assert set(ALLOWED) == set(ALL)
    allowed = {(a, b) for a, targets in ALLOWED.items() for b in targets}
    assert allowed == set(PAIRS) - REFUSED
    assert len(PAIRS) == 72
    assert len(REFUSED) == 29
    assert len(allowed) == 43


@pytest.mark.django_db
@pytest.mark.parametrize(("from_status", "to_status"), sorted(set(PAIRS) - REFUSED))
def test_allowed_transition_is_applied_recorded_and_signalled(from_status, to_status, sent) -> None:
    # given a subscription in from_status
    subscription = SubscriptionFactory(status=from_status)
    # when it moves to to_status
    subscription_transition(subscription=subscription, to_status=to_status, cause="dunning", note="n")
    # then the row, one history row and the signals say so
    subscription.refresh_from_db()
    assert subscription.status == to_status
    history = list(
        SubscriptionHistory.objects.filter(subscription_id=subscription.pk).values_list(
            "from_status", "to_status", "cause", "note"
        )
    )
    assert history == [(from_status, to_status, "dunning", "n")]
    assert sent.names() == _expected_signals(from_status, to_status)
    assert all(kwargs["subscription"].pk == subscription.pk for _, kwargs in sent)


@pytest.mark.django_db
@pytest.mark.parametrize(("from_status", "to_status"), sorted(REFUSED))
def test_refused_transition_raises_logs_and_changes_nothing(from_status, to_status, sent, caplog) -> None:
    # given a subscription in from_status
    subscription = SubscriptionFactory(status=from_status)
    # when asked to move to a status the table refuses
    with (
        caplog.at_level(logging.WARNING, logger="subscriptions.services"),
        pytest.raises(IllegalTransition) as raised,
    ):
        subscription_transition(subscription=subscription, to_status=to_status, cause="staff")
    # then a 409 illegal_transition, a log line, and nothing written or sent
    assert (raised.value.code, raised.value.status_code) == ("illegal_transition", 409)
    assert f"refused subscription transition {from_status} -> {to_status}" in caplog.text
    subscription.refresh_from_db()
    assert subscription.status == from_status
    assert SubscriptionHistory.objects.filter(subscription_id=subscription.pk).count() == 0
    assert sent.names() == []


@pytest.mark.django_db
@pytest.mark.parametrize("status", ALL)
def test_same_status_is_a_no_op(status, sent) -> None:
    # given a subscription in some status
    subscription = SubscriptionFactory(status=status)
    # when asked to move to the same status
    subscription_transition(subscription=subscription, to_status=status, cause="staff")
    # then nothing is written or sent
    assert SubscriptionHistory.objects.count() == 0
    assert sent.names() == []


@pytest.mark.django_db
def test_cancelling_stamps_cancelled_at() -> None:
    # given an active subscription with no cancellation time
    subscription = SubscriptionFactory(status=S.ACTIVE, cancelled_at=None)
    # when cancelled
    subscription_transition(subscription=subscription, to_status=S.CANCELLED, cause="staff")
    # then the time is recorded
    subscription.refresh_from_db()
    assert subscription.cancelled_at is not None


def test_the_statuses_the_database_allows_once_per_user_are_those_that_block_a_new_checkout() -> None:
    assert frozenset(LIVE_STATUSES) == BLOCKS_NEW_CHECKOUT


def test_an_unpaid_renewal_is_past_due_unpaid_or_suspended_and_keeps_its_access_suspended() -> None:
    # a paused subscription is not one whose renewal failed: it is left out
    assert frozenset({S.PAST_DUE, S.UNPAID, S.SUSPENDED}) == RENEWAL_UNPAID
    assert RENEWAL_UNPAID < ACCESS_SUSPENDED
