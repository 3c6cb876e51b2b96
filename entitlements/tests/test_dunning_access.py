"""What a past-due subscription keeps, by its plan's dunning policy (subscriptions.dunning)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from billing.models import Plan
from entitlements.models import Entitlement
from subscriptions import signals
from subscriptions.dunning.tests.factories import DunningPolicyFactory
from subscriptions.models import Subscription
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db


def _statuses(subscription: object) -> dict[str, str]:
    return dict(Entitlement.objects.filter(subscription=subscription).values_list("feature__code", "status"))


@pytest.mark.parametrize(
    ("access", "features", "expected"),
    [
        ("full", [], {"export": "active", "sso": "active"}),
        ("features", ["export"], {"export": "active", "sso": "suspended"}),
        ("none", [], {"export": "suspended", "sso": "suspended"}),
    ],
)
def test_past_due_keeps_what_the_policy_says(
    make_plan: Callable[..., Plan], access: str, features: list[str], expected: dict[str, str]
) -> None:
    # given an entitled subscription whose plan's policy sets past-due access
    plan = make_plan("export", "sso")
    DunningPolicyFactory(plan=plan, past_due_access=access, past_due_features=features)
    subscription = SubscriptionFactory(plan=plan)
    signals.subscription_activated.send(sender=None, subscription=subscription)
    # when it goes past due (the transition table sends `suspended`)
    subscription.status = Subscription.Status.PAST_DUE
    signals.subscription_suspended.send(sender=None, subscription=subscription)
    # then what the policy keeps stays usable
    assert _statuses(subscription) == expected


def test_dunning_suspension_suspends_everything_whatever_was_kept(make_plan: Callable[..., Plan]) -> None:
    plan = make_plan("export", "sso")
    DunningPolicyFactory(plan=plan, past_due_access="full")
    subscription = SubscriptionFactory(plan=plan)
    signals.subscription_activated.send(sender=None, subscription=subscription)
    subscription.status = Subscription.Status.SUSPENDED
    signals.subscription_suspended.send(sender=None, subscription=subscription)
    assert _statuses(subscription) == {"export": "suspended", "sso": "suspended"}
    subscription.status = Subscription.Status.ACTIVE
    signals.subscription_reactivated.send(sender=None, subscription=subscription)
    assert _statuses(subscription) == {"export": "active", "sso": "active"}


def test_dunning_grace_keeps_access_until_the_cancel_day_and_never_shortens_it(
    make_plan: Callable[..., Plan],
) -> None:
    subscription = SubscriptionFactory(plan=make_plan("export"))
    signals.subscription_activated.send(sender=None, subscription=subscription)
    assert subscription.current_period_end is not None
    cancel_day = subscription.current_period_end + timedelta(days=14)
    # when dunning keeps access until the cancel day (twice), then an earlier day arrives
    for until in (cancel_day, cancel_day, cancel_day - timedelta(days=20)):
        signals.subscription_grace_extended.send(sender=None, subscription=subscription, until=until)
    # then the row is usable until the cancel day
    assert list(
        Entitlement.objects.filter(subscription=subscription).values_list("status", "expires_at")
    ) == [("active", cancel_day)]
