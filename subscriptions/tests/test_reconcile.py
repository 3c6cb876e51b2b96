"""Periods that ended with no word from Stripe (a missed or delayed webhook) are asked of Stripe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.catalog.tests.factories import FeatureFactory, PlanFactory, PlanFeatureFactory
from billing.models import Feature
from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer
from entitlements.selectors import entitlement_check
from entitlements.services import entitlement_grant_for_subscription
from payments_project.accounts.tests.factories import UserFactory
from subscriptions.models import Subscription, SubscriptionHistory
from subscriptions.services import (
    subscription_apply_invoice_failed,
    subscription_suspend_unconfirmed,
    subscription_transition,
    subscriptions_overdue,
)
from subscriptions.tasks import subscriptions_reconcile_overdue_task
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def remote(stripe_standin: StandinServer) -> Any:
    """A monthly subscription at Stripe, active, its period running."""
    gw = stripe_gateway.client()
    product = gw.v1.products.create({"name": "Pro"})
    price = gw.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 999, "recurring": {"interval": "month"}}
    )
    customer = gw.v1.customers.create({"email": "late@example.com"})
    card = gw.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    gw.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    return gw.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})


def _ours(stripe_id: str, *, ended_ago: timedelta, heard_ago: timedelta | None) -> Subscription:
    """Our active row whose period ended `ended_ago`, Stripe last heard from `heard_ago`."""
    now = timezone.now()
    plan = PlanFactory()
    feature = Feature.objects.filter(code="export").first() or FeatureFactory(code="export")
    PlanFeatureFactory(plan=plan, feature=feature)
    sub: Any = SubscriptionFactory(
        plan=plan,
        stripe_subscription_id=stripe_id,
        current_period_start=now - ended_ago - timedelta(days=30),
        current_period_end=now - ended_ago,
        stripe_state_at=None if heard_ago is None else now - heard_ago,
    )
    entitlement_grant_for_subscription(subscription=sub)
    return sub


def _check(sub: Subscription) -> tuple[bool, str]:
    result = entitlement_check(user_id=sub.user_id, features=["export"])[0]
    return result["allowed"], result["reason"]


def test_a_renewal_whose_events_never_came_is_read_from_stripe_and_applied(
    remote: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given our row still on the period that ended 2 hours ago, no event since; access has expired
    sub = _ours(remote.id, ended_ago=timedelta(hours=2), heard_ago=timedelta(days=30))
    assert _check(sub) == (False, "expired")

    # when the beat job runs
    with django_capture_on_commit_callbacks(execute=True):
        reconciled = subscriptions_reconcile_overdue_task.delay().get()

    # then Stripe's current period is ours, confirmed now, and access runs again to its end
    sub.refresh_from_db()
    assert reconciled == 1
    assert (sub.status, int(sub.current_period_end.timestamp())) == ("active", remote.current_period_end)
    assert sub.stripe_state_at is not None
    assert sub.stripe_state_at > timezone.now() - timedelta(minutes=1)
    assert _check(sub) == (True, "granted")
    assert subscriptions_overdue() == []


def test_one_cancelled_at_stripe_is_cancelled_here_by_the_job(
    remote: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given a subscription cancelled at Stripe whose deleted event never reached us
    sub = _ours(remote.id, ended_ago=timedelta(hours=2), heard_ago=None)
    stripe_gateway.client().v1.subscriptions.cancel(remote.id)

    # when the beat job runs
    with django_capture_on_commit_callbacks(execute=True):
        subscriptions_reconcile_overdue_task.delay().get()

    # then it is cancelled here too, the job named as the cause
    sub.refresh_from_db()
    assert sub.status == "cancelled"
    assert list(sub.history.values_list("from_status", "to_status", "cause")) == [
        ("active", "cancelled", SubscriptionHistory.Cause.SCHEDULE)
    ]
    assert _check(sub) == (False, "no_subscription")


def test_one_stripe_no_longer_knows_is_cancelled_with_the_reason(stripe_standin: StandinServer) -> None:
    # given our active row for a subscription id Stripe does not know
    sub = _ours("sub_gone", ended_ago=timedelta(hours=2), heard_ago=None)

    # when the beat job runs
    subscriptions_reconcile_overdue_task.delay().get()

    # then it is cancelled, saying why
    sub.refresh_from_db()
    history = sub.history.get()
    assert (sub.status, history.cause) == ("cancelled", SubscriptionHistory.Cause.SCHEDULE)
    assert history.note.startswith("Stripe no longer knows sub_gone (")


def test_within_the_grace_or_heard_from_since_nothing_is_asked(settings: Any) -> None:
    # given the default grace of an hour: one period ended 10 minutes ago, one 2 hours ago that
    # Stripe confirmed since, one ended 2 hours ago with nothing since, and one already cancelled
    assert settings.SUBSCRIPTIONS_RECONCILE_GRACE_SECONDS == 3600
    _ours("sub_recent", ended_ago=timedelta(minutes=10), heard_ago=None)
    _ours("sub_confirmed", ended_ago=timedelta(hours=2), heard_ago=timedelta(hours=1))
    overdue = _ours("sub_overdue", ended_ago=timedelta(hours=2), heard_ago=timedelta(days=3))
    ended = _ours("sub_ended", ended_ago=timedelta(hours=2), heard_ago=None)
    Subscription.objects.filter(pk=ended.pk).update(status=Subscription.Status.CANCELLED)

    # then only the overdue one is asked of Stripe
    assert subscriptions_overdue() == [overdue.pk]


@contextmanager
def _stripe_unreachable(settings: Any) -> Iterator[None]:
    base = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = "http://127.0.0.1:1"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_gateway.client.cache_clear()
    try:
        yield
    finally:
        settings.STRIPE_API_BASE = base
        stripe_gateway.client.cache_clear()
        stripe_gateway.breaker.close()


def test_stripe_down_suspends_them_and_keeps_asking(settings: Any) -> None:
    # given Stripe unreachable and two overdue subscriptions
    first = _ours("sub_waiting_1", ended_ago=timedelta(hours=3), heard_ago=None)
    second = _ours("sub_waiting_2", ended_ago=timedelta(hours=2), heard_ago=None)

    # when the beat job runs
    with _stripe_unreachable(settings):
        reconciled = subscriptions_reconcile_overdue_task.delay().get()

    # then neither stays active past its period end and the grace: both are suspended, saying why,
    # and both are still due to be asked
    first.refresh_from_db()
    second.refresh_from_db()
    assert (reconciled, first.status, second.status) == (0, "suspended", "suspended")
    history = first.history.get()
    assert (history.from_status, history.to_status, history.cause) == ("active", "suspended", "schedule")
    end = f"{first.current_period_end:%Y-%m-%d %H:%M}"
    assert history.note.startswith(f"The period ended {end} UTC and Stripe has not confirmed what came next;")
    assert history.note.endswith("Suspended until Stripe answers.")
    assert _check(first) == (False, "suspended")
    assert subscriptions_overdue() == [first.pk, second.pk]

    # when the job runs again with Stripe still down
    with _stripe_unreachable(settings):
        subscriptions_reconcile_overdue_task.delay().get()

    # then nothing more is written
    assert first.history.count() == 1
    assert second.history.count() == 1


def test_a_suspended_one_is_reactivated_once_stripe_answers(
    remote: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given an overdue subscription the job suspended while Stripe was down
    sub = _ours(remote.id, ended_ago=timedelta(hours=2), heard_ago=None)
    with _stripe_unreachable(settings):
        subscriptions_reconcile_overdue_task.delay().get()
    sub.refresh_from_db()
    assert sub.status == "suspended"

    # when the job runs with Stripe back
    with django_capture_on_commit_callbacks(execute=True):
        reconciled = subscriptions_reconcile_overdue_task.delay().get()

    # then Stripe's renewal is applied: active on the new period, access back, nothing left due
    sub.refresh_from_db()
    assert reconciled == 1
    assert (sub.status, int(sub.current_period_end.timestamp())) == ("active", remote.current_period_end)
    assert list(sub.history.values_list("from_status", "to_status", "cause")) == [
        ("active", "suspended", "schedule"),
        ("suspended", "active", "schedule"),
    ]
    assert _check(sub) == (True, "granted")
    assert subscriptions_overdue() == []


def test_a_renewal_confirmed_meanwhile_is_not_suspended() -> None:
    # given an overdue subscription whose renewal webhook arrives after the job listed it
    sub = _ours("sub_late_event", ended_ago=timedelta(hours=2), heard_ago=None)
    Subscription.objects.filter(pk=sub.pk).update(stripe_state_at=timezone.now())

    # when the job's suspension comes for it
    suspended = subscription_suspend_unconfirmed(subscription_id=sub.pk, reason="timed out")

    # then the confirmation wins
    sub.refresh_from_db()
    assert (suspended, sub.status, sub.history.count()) == (False, "active", 0)


def test_a_failed_renewal_reported_after_the_hold_is_past_due_with_the_dunning_policy(
    settings: Any,
) -> None:
    # given an overdue subscription the job suspended while Stripe was down
    sub = _ours("sub_renewal_failed", ended_ago=timedelta(hours=2), heard_ago=None)
    with _stripe_unreachable(settings):
        subscriptions_reconcile_overdue_task.delay().get()

    # when the renewal's invoice.payment_failed arrives
    subscription_apply_invoice_failed(
        data={"id": "in_late", "subscription": "sub_renewal_failed", "lines": {"data": []}},
        event_id="evt_late_failure",
        event_created=timezone.now(),
    )

    # then the hold is lifted and the subscription is past due, its features kept as the default
    # dunning policy says (full access while the renewal is retried), and the job is done with it
    sub.refresh_from_db()
    assert list(sub.history.values_list("from_status", "to_status", "cause", "note")[1:]) == [
        ("suspended", "active", "webhook", "Stripe answered: the reconcile job's suspension is lifted."),
        ("active", "past_due", "webhook", ""),
    ]
    hold = sub.history.first()
    assert (hold.from_status, hold.to_status, hold.cause) == ("active", "suspended", "schedule")
    assert hold.note.startswith("The period ended ")
    assert hold.note.endswith("Suspended until Stripe answers.")
    assert sub.status == "past_due"
    assert sub.entitlements.get().status == "active"
    assert subscriptions_overdue() == []


def test_a_staff_suspension_after_the_jobs_hold_is_left_alone(settings: Any) -> None:
    # given an overdue subscription the job suspended, that staff reactivated then suspended
    sub = _ours("sub_held_then_staff", ended_ago=timedelta(hours=2), heard_ago=None)
    with _stripe_unreachable(settings):
        subscriptions_reconcile_overdue_task.delay().get()
    staff_user = UserFactory(is_staff=True)
    subscription_transition(subscription=sub, to_status="active", cause="staff", staff_user=staff_user)
    subscription_transition(subscription=sub, to_status="suspended", cause="staff", staff_user=staff_user)

    # then the job no longer asks Stripe about it (its latest suspension is staff's)
    assert subscriptions_overdue() == []


def test_those_still_active_are_asked_before_those_held(settings: Any) -> None:
    # given one subscription held by the job (the older period) and one newly overdue
    held = _ours("sub_held_old", ended_ago=timedelta(hours=5), heard_ago=None)
    with _stripe_unreachable(settings):
        subscriptions_reconcile_overdue_task.delay().get()
    fresh = _ours("sub_new_overdue", ended_ago=timedelta(hours=2), heard_ago=None)

    # then the active one comes first: held ones that keep failing never crowd it out
    assert subscriptions_overdue() == [fresh.pk, held.pk]


def test_a_staff_suspension_is_not_the_jobs_to_undo() -> None:
    # given an overdue subscription staff suspended themselves
    sub = _ours("sub_staff_held", ended_ago=timedelta(hours=2), heard_ago=None)
    staff_user = UserFactory(is_staff=True)
    subscription_transition(subscription=sub, to_status="suspended", cause="staff", staff_user=staff_user)

    # then the job does not ask Stripe about it
    assert subscriptions_overdue() == []
