from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine

from subscriptions.selectors import subscription_access_until, subscription_has_access
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db
TRIAL_END = datetime(2027, 1, 15, tzinfo=UTC)
PERIOD_END = datetime(2027, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [("2027-01-14T23:59:59Z", True), ("2027-01-15T00:00:00Z", False)],
)
def test_trial_gives_access_until_the_trial_end(now, expected) -> None:
    # given a trialing subscription
    sub = SubscriptionFactory(status="trialing", trial_end=TRIAL_END, current_period_end=PERIOD_END)
    # when the clock reads `now` / then access until the trial's end only
    with time_machine.travel(now, tick=False):
        assert subscription_has_access(subscription=sub) is expected
    assert subscription_access_until(subscription=sub) == TRIAL_END


@pytest.mark.parametrize(
    ("now", "expected"),
    [("2027-01-31T23:59:59Z", True), ("2027-02-01T00:00:00Z", False)],
)
def test_active_gives_access_until_the_period_end(now, expected) -> None:
    # given an active subscription
    sub = SubscriptionFactory(status="active", current_period_end=PERIOD_END)
    # when the clock reads `now` / then access until the period's end
    with time_machine.travel(now, tick=False):
        assert subscription_has_access(subscription=sub) is expected


@pytest.mark.parametrize("status", ["past_due", "cancelled", "incomplete"])
def test_no_access_outside_live_statuses(status) -> None:
    # given a subscription not live, within its period / then no access
    sub = SubscriptionFactory(status=status, current_period_end=PERIOD_END)
    with time_machine.travel("2027-01-10T00:00:00Z", tick=False):
        assert subscription_has_access(subscription=sub) is False
