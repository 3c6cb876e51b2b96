"""Customer and staff operations call Stripe outside any transaction: the intent is recorded, Stripe
is called, the answer applied; a sweep finishes what a dead process left pending, under the same key.

Stripe is the stand-in behind a small recording proxy: it sees every request's Idempotency-Key
and the stand-in's `Idempotent-Replayed` answer, and can hang writes (accept, never answer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import stripe
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from billing.catalog.tests.factories import (
    CustomerPricingFactory,
    PlanFactory,
    PriceFactory,
    PricingZoneFactory,
    ZoneCountryFactory,
    ZonePriceFactory,
)
from billing.models import Plan, StripeEvent, StripePrice
from billing.stripe import gateway as stripe_gateway
from billing.stripe import services as stripe_services
from billing.stripe.tests.events import deliver, event
from devtools.testing import StandinServer, StripeProxy
from payments_project.accounts.tests.factories import UserFactory
from payments_project.errors import DomainError
from subscriptions import services
from subscriptions.models import Subscription, SubscriptionHistory, SubscriptionStripeCall
from subscriptions.tasks import stripe_calls_sweep_task
from subscriptions.tests.factories import PERIOD_START, SubscriptionFactory

CallStatus = SubscriptionStripeCall.Status


@pytest.fixture
def proxy(stripe_standin: StandinServer, settings: Any) -> Iterator[StripeProxy]:
    server = StripeProxy(stripe_standin.url)
    threading.Thread(target=server.serve_forever, name="stripe-proxy", daemon=True).start()
    settings.STRIPE_API_BASE = server.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 1
    stripe_gateway.client.cache_clear()
    stripe_gateway.configure_sdk_globals()  # dj-stripe's calls (Stripe event processing) too
    yield server
    server.stop()
    settings.STRIPE_API_BASE = stripe_standin.url
    stripe_gateway.client.cache_clear()
    stripe_gateway.configure_sdk_globals()


def _remote_subscription(client: stripe.StripeClient) -> str:
    product = client.v1.products.create({"name": "Pro"})
    price = client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 999, "recurring": {"interval": "month"}}
    )
    customer = client.v1.customers.create({"email": "owner@example.com"})
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    return client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]}).id


@pytest.fixture
def subscription(proxy: StripeProxy) -> Subscription:
    """Ours and the stand-in's, active on a monthly price."""
    remote_id = _remote_subscription(stripe_gateway.client())
    row = SubscriptionFactory(user=UserFactory(username="owner"), stripe_subscription_id=remote_id)
    return Subscription.objects.select_related("plan").get(pk=row.pk)


def _target_plan() -> str:
    """A plan `max` with its Stripe price on the stand-in."""
    target = PlanFactory(code="max")
    PriceFactory(plan=target, currency="USD", amount=1999)
    client = stripe_gateway.client()
    product = client.v1.products.create({"name": "Max"})
    price = client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 1999, "recurring": {"interval": "month"}}
    )
    StripePrice.objects.create(
        plan=target, currency="USD", amount=1999, interval="month", stripe_price_id=price.id
    )
    return "max"


def _age_pending_calls() -> None:
    """As if the sender had died a while ago: its claim has expired."""
    past = timezone.now() - timedelta(minutes=5)
    SubscriptionStripeCall.objects.filter(status=CallStatus.PENDING).update(
        in_flight_until=past, updated_at=past
    )


def _staff() -> Any:
    return UserFactory(username="agent", is_staff=True, is_superuser=True)


# Each operation: how to prepare the row, the call, and what our row says once it is applied.
@dataclass
class Operation:
    prepare: Callable[[Subscription], None]
    run: Callable[[Subscription], Subscription]
    applied: Callable[[Subscription], bool]


OPERATIONS = {
    "cancel": Operation(
        prepare=lambda sub: None,
        run=lambda sub: services.subscription_cancel(subscription=sub, actor=sub.user),
        applied=lambda sub: sub.cancel_at_period_end,
    ),
    "resume": Operation(
        prepare=lambda sub: Subscription.objects.filter(pk=sub.pk).update(cancel_at_period_end=True),
        run=lambda sub: services.subscription_resume(subscription=sub, actor=sub.user),
        applied=lambda sub: not sub.cancel_at_period_end,
    ),
    "change-plan": Operation(
        prepare=lambda sub: None,
        run=lambda sub: services.subscription_change_plan(
            subscription=sub, plan=Plan.objects.get(code="max"), actor=sub.user
        ),
        applied=lambda sub: sub.plan.code == "max",
    ),
    "extend": Operation(
        prepare=lambda sub: None,
        run=lambda sub: services.subscription_extend_period(
            subscription=sub, days=7, staff_user=_staff(), note="outage"
        ),
        applied=lambda sub: sub.current_period_end == PERIOD_START + timedelta(days=31 + 7),
    ),
}


def _other_idle_transactions() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE %s AND pid <> pg_backend_pid()",
            ["idle in transaction%"],
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_hanging_stripe_holds_no_row_lock_and_the_sweep_finishes_the_change(
    name: str, subscription: Subscription, proxy: StripeProxy, settings: Any
) -> None:
    # given an operation on a subscription, and a Stripe that accepts writes and never answers
    operation = OPERATIONS[name]
    if name == "change-plan":
        _target_plan()
    operation.prepare(subscription)
    settings.STRIPE_TIMEOUT_SECONDS = 2.0
    stripe_gateway.client.cache_clear()
    proxy.hang.set()
    outcome: list[BaseException | Subscription] = []

    def request() -> None:
        try:
            outcome.append(operation.run(Subscription.objects.get(pk=subscription.pk)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            outcome.append(exc)
        finally:
            connection.close()

    # when the operation runs in another thread, for the gateway's whole timeout and its retry
    worker = threading.Thread(target=request)
    worker.start()
    try:
        for attempt in range(2):  # the SDK's first try, then its retry
            assert proxy.hung.acquire(timeout=20), "the write never reached Stripe"
            # then meanwhile another transaction can lock the row at once, and none is left open
            with transaction.atomic():
                locked = Subscription.objects.select_for_update(nowait=True).get(pk=subscription.pk)
                assert locked.pk == subscription.pk
            assert _other_idle_transactions() == 0
            if attempt == 0:
                # and the same request again is told the change is on its way, not sent twice
                with pytest.raises(services.StripeChangeInProgress):
                    operation.run(Subscription.objects.get(pk=subscription.pk))
    finally:
        worker.join(timeout=30)

    # then the caller got "Stripe unavailable", the row is unchanged, the intent pending and free
    assert isinstance(outcome[0], stripe_gateway.StripeUnavailable)
    assert not operation.applied(Subscription.objects.get(pk=subscription.pk))
    call = SubscriptionStripeCall.objects.get()
    assert (call.status, call.in_flight_until, call.attempts) == (CallStatus.PENDING, None, 1)

    # when Stripe is back and the sweep runs
    proxy.hang.clear()
    _age_pending_calls()
    assert stripe_calls_sweep_task.apply().result == 1

    # then the change is applied, once, sent every time under the one key
    assert operation.applied(Subscription.objects.get(pk=subscription.pk))
    call.refresh_from_db()
    assert (call.status, call.attempts) == (CallStatus.APPLIED, 2)
    writes = proxy.writes(f"/v1/subscriptions/{subscription.stripe_subscription_id}")
    assert [w.idempotency_key for w in writes] == [call.idempotency_key] * 3
    assert SubscriptionHistory.objects.filter(subscription=subscription).count() == 1


def _crash_before_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies after Stripe's answer, before our row is written."""

    def die(call: SubscriptionStripeCall) -> Subscription:
        raise SystemExit("worker killed")

    monkeypatch.setattr(services, "_call_apply", die)


@pytest.mark.django_db
def test_the_sweep_applies_a_change_whose_apply_never_ran(
    subscription: Subscription, proxy: StripeProxy, monkeypatch: pytest.MonkeyPatch, sent
) -> None:
    # given a cancellation Stripe made but our process died before applying
    with monkeypatch.context() as patch:
        _crash_before_apply(patch)
        with pytest.raises(SystemExit):
            services.subscription_cancel(subscription=subscription, actor=subscription.user)
    call = SubscriptionStripeCall.objects.get()
    assert call.status == CallStatus.PENDING
    subscription.refresh_from_db()
    assert subscription.cancel_at_period_end is False

    # then until its claim expires the sweep leaves it alone, and another change waits for it
    assert stripe_calls_sweep_task.apply().result == 0
    with pytest.raises(services.StripeChangeInProgress):
        services.subscription_extend_period(subscription=subscription, days=7, staff_user=_staff(), note="")

    # when the sweep runs after the claim expired
    _age_pending_calls()
    assert stripe_calls_sweep_task.apply().result == 1

    # then it sent the same key again, Stripe replayed its answer, and our row follows, once
    writes = proxy.writes(f"/v1/subscriptions/{subscription.stripe_subscription_id}")
    assert [(w.idempotency_key, w.replayed) for w in writes] == [
        (call.idempotency_key, "false"),
        (call.idempotency_key, "true"),
    ]
    subscription.refresh_from_db()
    assert subscription.cancel_at_period_end is True
    assert list(subscription.history.values_list("cause", "note")) == [
        ("api", "cancel at period end requested")
    ]
    call.refresh_from_db()
    assert (call.status, call.attempts, call.in_flight_until) == (CallStatus.APPLIED, 2, None)
    # and a later sweep finds nothing to do
    _age_pending_calls()
    assert stripe_calls_sweep_task.apply().result == 0
    assert len(proxy.writes(f"/v1/subscriptions/{subscription.stripe_subscription_id}")) == 2
    assert sent.names() == []


@pytest.mark.django_db
def test_the_callers_retry_reuses_the_intent_and_stripe_replays_it(
    subscription: Subscription, proxy: StripeProxy, monkeypatch: pytest.MonkeyPatch, sent
) -> None:
    # given a plan change Stripe made, never applied here
    _target_plan()
    plan = Plan.objects.get(code="max")
    with monkeypatch.context() as patch:
        _crash_before_apply(patch)
        with pytest.raises(SystemExit):
            services.subscription_change_plan(subscription=subscription, plan=plan, actor=subscription.user)
    _age_pending_calls()

    # when the customer asks again (same row state, so the same key)
    services.subscription_change_plan(subscription=subscription, plan=plan, actor=subscription.user)

    # then Stripe got the same key and body and replayed; our row moved once, one plan_changed
    writes = proxy.writes(f"/v1/subscriptions/{subscription.stripe_subscription_id}")
    assert len({w.idempotency_key for w in writes}) == 1
    assert [w.replayed for w in writes] == ["false", "true"]
    assert SubscriptionStripeCall.objects.get().attempts == 2
    subscription.refresh_from_db()
    assert (subscription.plan.code, subscription.amount) == ("max", 1999)
    assert subscription.history.count() == 1
    assert sent.names() == ["plan_changed"]


@pytest.mark.django_db
def test_a_stripe_refusal_marks_the_intent_failed_and_frees_the_subscription(
    proxy: StripeProxy, api_client
) -> None:
    # given a row whose Stripe subscription Stripe does not know
    sub = SubscriptionFactory(user=UserFactory(username="me"), stripe_subscription_id="sub_missing")
    api_client.force_authenticate(sub.user)
    # when I cancel
    response = api_client.post(f"/api/v1/subscriptions/{sub.pk}/cancel", {}, format="json")
    # then Stripe's refusal is answered, the intent failed with it, the row unchanged
    assert (response.status_code, response.json()["error"]["code"]) == (400, "stripe_invalid_request")
    call = SubscriptionStripeCall.objects.get()
    assert (call.status, call.in_flight_until) == (CallStatus.FAILED, None)
    assert call.error.startswith("stripe_invalid_request: ")
    sub.refresh_from_db()
    assert sub.cancel_at_period_end is False
    # and another change is not held back by it (it reaches Stripe, which refuses it too)
    staff = _staff()
    with pytest.raises(DomainError) as refused:
        services.subscription_extend_period(subscription=sub, days=7, staff_user=staff, note="")
    assert refused.value.code == "stripe_invalid_request"


@pytest.mark.django_db
@pytest.mark.parametrize("zoned", [False, True], ids=["list-price", "zone-price"])
def test_change_plan_to_a_free_plan_is_refused_like_checkout(api_client, zoned: bool) -> None:
    # given a plan whose price is 0 where the subscription is billed
    free = PlanFactory(code="free")
    zone = PricingZoneFactory(code="eu") if zoned else None
    if zone is not None:
        PriceFactory(plan=free, currency="USD", amount=500)
        ZonePriceFactory(zone=zone, plan=free, amount=0)
    else:
        PriceFactory(plan=free, currency="USD", amount=0)
    sub = SubscriptionFactory(user=UserFactory(username="me"), pricing_zone=zone)
    if zone is not None:  # the customer's own pricing country is in that zone (docs/pricing-trust.md)
        ZoneCountryFactory(zone=zone, country="FR")
        CustomerPricingFactory(user=sub.user, country="FR")
    api_client.force_authenticate(sub.user)

    # when I move to it, and when I would buy it at checkout
    moved = api_client.post(f"/api/v1/subscriptions/{sub.pk}/change-plan", {"plan": "free"}, format="json")
    checkout = {"plan": "free", "success_url": "https://x.test/ok", "cancel_url": "https://x.test/no"}
    bought = api_client.post("/api/v1/checkout-sessions/", checkout)

    # then both doors refuse it alike, and nothing changed or was recorded
    where = "eu" if zoned else "the default zone"
    for response in (moved, bought):
        error = response.json()["error"]
        assert (response.status_code, error["code"], error["message"]) == (
            400,
            "not_for_sale",
            f"Plan 'free' is not sold in {where}.",
        )
    sub.refresh_from_db()
    assert sub.plan.code != "free"
    assert not SubscriptionStripeCall.objects.exists()


@pytest.mark.django_db
def test_the_sweep_gives_up_before_stripe_forgets_the_key(proxy: StripeProxy) -> None:
    # given a change pending for a day (Stripe keeps idempotency keys for 24 hours)
    sub = SubscriptionFactory()
    call = SubscriptionStripeCall.objects.create(
        subscription=sub,
        action=SubscriptionStripeCall.Action.RESUME,
        stripe_params={"cancel_at_period_end": False},
        idempotency_key="subscription:1:resume:0",
        cause=SubscriptionHistory.Cause.API,
    )
    SubscriptionStripeCall.objects.filter(pk=call.pk).update(created_at=timezone.now() - timedelta(hours=24))
    # when the sweep runs
    assert stripe_calls_sweep_task.apply().result == 0
    # then it is failed, never sent again (a resend could now make the change twice)
    call.refresh_from_db()
    assert (call.status, call.error) == (CallStatus.FAILED, "given up: Stripe never confirmed it")
    assert proxy.seen == []


@pytest.mark.django_db(transaction=True)
def test_a_stripe_event_waiting_on_a_hanging_stripe_holds_no_transaction_and_no_row_lock(
    subscription: Subscription, proxy: StripeProxy, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given Stripe's customer.subscription.updated in the inbox, not yet processed
    remote = stripe_gateway.client().v1.subscriptions.update(
        subscription.stripe_subscription_id, {"cancel_at_period_end": True}
    )
    monkeypatch.setattr(stripe_services, "_publish", lambda pk: None)
    assert deliver(Client(), event("customer.subscription.updated", remote)).status_code == 200
    row = StripeEvent.objects.get()

    # and a Stripe that never answers dj-stripe's re-read of the subscription
    settings.STRIPE_TIMEOUT_SECONDS = 1.0
    stripe_gateway.configure_sdk_globals()
    proxy.hang_reads_under = f"/v1/subscriptions/{subscription.stripe_subscription_id}"
    outcome: list[BaseException | StripeEvent] = []

    def process() -> None:
        try:
            outcome.append(stripe_services.stripe_event_process(stripe_event_pk=row.pk))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            outcome.append(exc)
        finally:
            connection.close()

    # when a worker processes it, for the timeout and the SDK's retry
    worker = threading.Thread(target=process)
    worker.start()
    try:
        for _ in range(2):
            assert proxy.hung.acquire(timeout=20), "the read never reached Stripe"
            # then meanwhile no transaction is open and the subscription row locks at once
            assert _other_idle_transactions() == 0
            with transaction.atomic():
                locked = Subscription.objects.select_for_update(nowait=True).get(pk=subscription.pk)
                assert locked.pk == subscription.pk
    finally:
        worker.join(timeout=30)
    assert isinstance(outcome[0], stripe_services.StripeEventFailed)
    assert not Subscription.objects.get(pk=subscription.pk).cancel_at_period_end

    # when Stripe answers again and the retry runs, the change is applied
    proxy.hang_reads_under = None
    assert stripe_services.stripe_event_process(stripe_event_pk=row.pk).status == "done"
    assert Subscription.objects.get(pk=subscription.pk).cancel_at_period_end
