from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest

from billing.models import Plan
from entitlements.models import Entitlement
from subscriptions import signals
from subscriptions.models import Subscription
from subscriptions.tests.factories import SubscriptionFactory


def _subscription(**fields: Any) -> Subscription:
    return cast(Subscription, SubscriptionFactory(**fields))


def _rows(subscription: Subscription) -> list[tuple[str, str, object]]:
    return list(
        Entitlement.objects.filter(subscription=subscription)
        .order_by("feature__code")
        .values_list("feature__code", "status", "expires_at")
    )


@pytest.mark.django_db
def test_activated_twice_grants_one_row_per_feature(make_plan: Callable[..., Plan]) -> None:
    # given a subscription to a plan of two features
    subscription = _subscription(plan=make_plan("export", "sso"))

    # when the activation signal is sent twice
    signals.subscription_activated.send(sender=None, subscription=subscription)
    signals.subscription_activated.send(sender=None, subscription=subscription)

    # then there is one active row per feature
    end = subscription.current_period_end
    assert _rows(subscription) == [("export", "active", end), ("sso", "active", end)]


@pytest.mark.django_db
def test_renewed_twice_extends_once(make_plan: Callable[..., Plan]) -> None:
    subscription = _subscription(plan=make_plan("export"))
    signals.subscription_activated.send(sender=None, subscription=subscription)
    assert subscription.current_period_end is not None
    subscription.current_period_end = subscription.current_period_end + timedelta(days=30)

    signals.subscription_renewed.send(sender=None, subscription=subscription)
    signals.subscription_renewed.send(sender=None, subscription=subscription)

    assert _rows(subscription) == [("export", "active", subscription.current_period_end)]


@pytest.mark.django_db
def test_suspended_then_reactivated_twice_each(make_plan: Callable[..., Plan]) -> None:
    subscription = _subscription(plan=make_plan("export"))
    signals.subscription_activated.send(sender=None, subscription=subscription)
    end = subscription.current_period_end

    signals.subscription_suspended.send(sender=None, subscription=subscription)
    signals.subscription_suspended.send(sender=None, subscription=subscription)
    assert _rows(subscription) == [("export", "suspended", end)]

    signals.subscription_reactivated.send(sender=None, subscription=subscription)
    signals.subscription_reactivated.send(sender=None, subscription=subscription)
    assert _rows(subscription) == [("export", "active", end)]


@pytest.mark.django_db
def test_cancelled_twice_revokes(make_plan: Callable[..., Plan]) -> None:
    subscription = _subscription(plan=make_plan("export"))
    signals.subscription_activated.send(sender=None, subscription=subscription)

    signals.subscription_cancelled.send(sender=None, subscription=subscription)
    signals.subscription_cancelled.send(sender=None, subscription=subscription)

    assert _rows(subscription) == [("export", "revoked", subscription.current_period_end)]


@pytest.mark.django_db
def test_plan_changed_twice_replaces_the_features(make_plan: Callable[..., Plan]) -> None:
    # given a subscription granted on a plan with export and sso
    subscription = _subscription(plan=make_plan("export", "sso"))
    signals.subscription_activated.send(sender=None, subscription=subscription)
    previous = subscription.plan

    # when it moves to a plan with export and audit, signalled twice
    subscription.plan = make_plan("audit")
    subscription.plan.plan_features.create(feature=previous.plan_features.get(feature__code="export").feature)
    subscription.save()
    signals.subscription_plan_changed.send(sender=None, subscription=subscription, previous_plan=previous)
    signals.subscription_plan_changed.send(sender=None, subscription=subscription, previous_plan=previous)

    # then sso is revoked, export moved to the new plan, audit granted
    end = subscription.current_period_end
    assert _rows(subscription) == [
        ("audit", "active", end),
        ("export", "active", end),
        ("sso", "revoked", end),
    ]
    assert set(
        Entitlement.objects.filter(subscription=subscription, status="active").values_list(
            "plan_id", flat=True
        )
    ) == {subscription.plan_id}
