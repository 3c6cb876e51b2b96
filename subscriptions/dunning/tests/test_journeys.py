"""Whole dunning journeys, day by day under a frozen clock, against the Stripe stand-in.

Each day the beat sweep runs once (Celery eager: its retry tasks run at once, calling the stand-in
over HTTP); what Stripe was asked is read from the stand-in's request log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
import time_machine
from django.core import mail
from prometheus_client import REGISTRY

from billing.stripe import gateway as stripe_gateway
from devtools import standin_clock
from devtools.testing import StandinServer
from subscriptions.dunning.models import DunningAttempt, DunningCase, DunningEmail
from subscriptions.dunning.services import dunning_new_card, dunning_sweep
from subscriptions.dunning.tests.conftest import Renewal
from subscriptions.models import Subscription
from subscriptions.services import subscription_cancel

pytestmark = pytest.mark.django_db(transaction=True)
START = datetime(2027, 3, 10, 10, 0, tzinfo=UTC)


def _pay_days(start: datetime, log_days: dict[int, int]) -> list[int]:
    return sorted(day for day, n in log_days.items() if n)


def _walk(
    traveller: time_machine.Traveller,
    start: datetime,
    days: range,
    on_day: Callable[[int], None] | None = None,
) -> dict[int, int]:
    """Run the sweep once on each day; how many invoice payments Stripe was asked for, by day."""
    paid_by_day = {}
    for day in days:
        traveller.move_to(start + timedelta(days=day, minutes=5))
        before = _pays()
        if on_day is not None:
            on_day(day)
        dunning_sweep()
        paid_by_day[day] = _pays() - before
    return paid_by_day


def _pays() -> int:
    return sum(
        1 for method, path, _ in standin_clock.requests_log() if method == "POST" and path.endswith("/pay")
    )


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _steps(case: DunningCase) -> list[str]:
    return list(DunningEmail.objects.filter(case=case).order_by("pk").values_list("step", flat=True))


def test_full_journey_retries_on_schedule_then_suspends_then_cancels(
    failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    with time_machine.travel(START, tick=False) as traveller:
        # given a renewal whose card keeps failing, delivered as invoice.payment_failed
        renewal = failed_renewal()
        case = renewal.deliver_failed(stripe_client)
        assert case is not None
        renewal.subscription.refresh_from_db()
        assert (case.stage, renewal.subscription.status) == ("past_due", "past_due")
        assert [a.due_at for a in case.attempts.order_by("number")] == [
            START + timedelta(days=d) for d in (1, 3, 5, 7)
        ]
        # when the days pass
        suspended_on: dict[str, int] = {}

        def watch(day: int) -> None:
            renewal.subscription.refresh_from_db()
            suspended_on.setdefault(renewal.subscription.status, day)

        paid = _walk(traveller, START, range(1, 16), on_day=watch)
    # then Stripe was asked to pay on days 1, 3, 5 and 7 only, each under its own key
    assert _pay_days(START, paid) == [1, 3, 5, 7]
    keys = [key for _, path, key in standin_clock.requests_log() if path.endswith("/pay")]
    assert keys == [f"dunning:{renewal.invoice_id}:{n}" for n in (1, 2, 3, 4)]
    # and the subscription was suspended after the 3rd failed retry (seen on day 6), cancelled on day 14
    assert suspended_on["suspended"] == 6
    case.refresh_from_db()
    renewal.subscription.refresh_from_db()
    assert (case.stage, case.failed_retries, renewal.subscription.status) == ("cancelled", 4, "cancelled")
    assert case.closed_at == START + timedelta(days=14, minutes=5)
    # and Stripe has the subscription cancelled and the invoice voided
    assert stripe_client.v1.invoices.retrieve(renewal.invoice_id).status == "void"
    assert (
        stripe_client.v1.subscriptions.retrieve(renewal.subscription.stripe_subscription_id).status
        == "canceled"
    )
    # and the customer got one email per step
    assert _steps(case) == [
        "payment_failed",
        "retry_failed:1",
        "retry_failed:2",
        "suspended",
        "retry_failed:4",
        "cancelled",
    ]
    assert [m.subject for m in mail.outbox][-1] == "Your Pro subscription was cancelled"
    assert len(mail.outbox) == 6


def test_a_new_card_on_day_4_recovers_at_once_and_no_retry_follows(
    failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    recovered_before = _metric("dunning_recovered_amount_total", currency="USD")
    succeeded_before = _metric("dunning_retries_total", outcome="succeeded")
    with time_machine.travel(START, tick=False) as traveller:
        renewal = failed_renewal()
        case = renewal.deliver_failed(stripe_client)
        assert case is not None

        def add_card(day: int) -> None:
            if day == 4:  # the customer adds a good card (payment_method.attached)
                card = stripe_client.v1.payment_methods.attach(
                    "pm_card_visa", {"customer": renewal.customer_id}
                )
                dunning_new_card(stripe_customer_id=renewal.customer_id, payment_method=card.id)

        paid = _walk(traveller, START, range(1, 16), on_day=add_card)
    # then retries on days 1 and 3 failed, the new card paid on day 4, nothing after
    assert _pay_days(START, paid) == [1, 3, 4]
    case.refresh_from_db()
    renewal.subscription.refresh_from_db()
    assert (case.stage, renewal.subscription.status, case.recovered_amount) == ("recovered", "active", 1500)
    assert case.failed_retries == 2
    assert stripe_client.v1.invoices.retrieve(renewal.invoice_id).status == "paid"
    statuses = dict(case.attempts.values_list("number", "status"))
    assert statuses == {1: "failed", 2: "failed", 3: "cancelled", 4: "cancelled", 5: "succeeded"}
    assert case.attempts.get(number=5).kind == DunningAttempt.Kind.NEW_CARD
    assert _steps(case) == ["payment_failed", "retry_failed:1", "retry_failed:2", "recovered"]
    # and the metrics counted the recovered amount and the successful retry
    assert _metric("dunning_recovered_amount_total", currency="USD") - recovered_before == 1500
    assert _metric("dunning_retries_total", outcome="succeeded") - succeeded_before == 1


def test_a_stolen_card_found_at_renewal_is_never_retried_and_asks_for_a_new_card(
    failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    with time_machine.travel(START, tick=False) as traveller:
        # given a renewal declined as stolen, delivered as Stripe sends it: the invoice names its
        # payment intent, the card's codes are on the intent only
        renewal = failed_renewal(decline_later={"decline_code": "stolen_card"})
        case = renewal.deliver_failed(stripe_client)
        assert case is not None
        # then the codes were read from Stripe at once: no retry left, a new card asked for
        case.refresh_from_db()
        assert (case.last_decline_code, case.needs_new_card, case.stripe_payment_method_id) == (
            "stolen_card",
            True,
            renewal.card,
        )
        assert case.decline_lookup_due_at is None
        assert set(case.attempts.values_list("status", flat=True)) == {"skipped"}
        renewal.subscription.refresh_from_db()
        assert (case.stage, renewal.subscription.status) == ("suspended", "suspended")
        assert "Your bank asked us not to try this card again" in mail.outbox[0].body
        paid = _walk(traveller, START, range(1, 16))
    # and Stripe was never asked to charge the stolen card again
    assert _pay_days(START, paid) == []
    assert [path for method, path, _ in standin_clock.requests_log() if method == "POST"] == [
        f"/v1/invoices/{renewal.invoice_id}/void"
    ]
    case.refresh_from_db()
    assert _steps(case) == ["payment_failed", "suspended", "cancelled"]
    assert case.stage == "cancelled"


def test_a_void_that_keeps_failing_is_retried_by_the_sweep_under_its_key_until_stripe_confirms(
    failed_renewal: Callable[..., Renewal],
    stripe_client: stripe.StripeClient,
    stripe_standin: StandinServer,
    settings: Any,
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0  # one request per call: the log counts our asks
    stripe_gateway.client.cache_clear()
    with time_machine.travel(START, tick=False) as traveller:
        renewal = failed_renewal()
        case = renewal.deliver_failed(stripe_client)
        assert case is not None
        void = f"/v1/invoices/{renewal.invoice_id}/void"
        # given Stripe answers the void with 500 three times (the task's own try, then two sweeps)
        stripe_standin.fail(void, status=500, times=3)
        # when the customer cancels mid-dunning
        traveller.move_to(START + timedelta(days=2))
        subscription_cancel(subscription=renewal.subscription, actor=renewal.subscription.user)
        # then the case stopped, the invoice is still open, and its end is recorded as pending
        case.refresh_from_db()
        assert case.stage == "stopped"
        assert case.invoice_end_due_at == START + timedelta(days=2, minutes=5)
        assert stripe_client.v1.invoices.retrieve(renewal.invoice_id).status == "open"
        # when the sweep runs every few minutes
        for minutes in (1, 6, 12, 18, 30):
            traveller.move_to(START + timedelta(days=2, minutes=minutes))
            dunning_sweep()
    # then each due sweep asked again under the same key until Stripe voided it, then stopped asking
    voids = [entry for entry in standin_clock.requests_log() if entry[1] == void]
    assert voids == [("POST", void, f"dunning:{renewal.invoice_id}:end")] * 4
    assert stripe_client.v1.invoices.retrieve(renewal.invoice_id).status == "void"
    case.refresh_from_db()
    assert case.invoice_end_due_at is None
    assert not case.attempts.filter(status__in=("scheduled", "claimed", "running")).exists()


def test_a_void_that_stripe_refuses_for_good_is_not_asked_again_every_few_minutes(
    failed_renewal: Callable[..., Renewal],
    stripe_client: stripe.StripeClient,
    stripe_standin: StandinServer,
    settings: Any,
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0  # one request per call: the log counts our asks
    stripe_gateway.client.cache_clear()
    with time_machine.travel(START, tick=False) as traveller:
        renewal = failed_renewal()
        case = renewal.deliver_failed(stripe_client)
        assert case is not None
        void = f"/v1/invoices/{renewal.invoice_id}/void"
        invoice = f"/v1/invoices/{renewal.invoice_id}"
        # given Stripe refuses the void (400) and then cannot find the invoice (404): a refusal,
        # not an outage
        stripe_standin.fail(void, status=400, times=1)
        stripe_standin.fail(invoice, status=404, times=1)
        # when the customer cancels mid-dunning, and the sweep runs for the next half hour
        traveller.move_to(START + timedelta(days=2))
        subscription_cancel(subscription=renewal.subscription, actor=renewal.subscription.user)
        for minutes in (1, 6, 12, 18, 30):
            traveller.move_to(START + timedelta(days=2, minutes=minutes))
            dunning_sweep()
    # then the case stopped with no pending end, and Stripe was asked to void it once, not again
    case.refresh_from_db()
    assert (case.stage, case.invoice_end_due_at) == ("stopped", None)
    voids = [entry for entry in standin_clock.requests_log() if entry[1] == void]
    assert voids == [("POST", void, f"dunning:{renewal.invoice_id}:end")]


def test_a_customer_cancelling_mid_dunning_stops_retries_and_voids_the_invoice(
    failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    with time_machine.travel(START, tick=False) as traveller:
        renewal = failed_renewal()
        case = renewal.deliver_failed(stripe_client)
        assert case is not None

        def cancel(day: int) -> None:
            if day == 2:
                subscription_cancel(subscription=renewal.subscription, actor=renewal.subscription.user)

        paid = _walk(traveller, START, range(1, 16), on_day=cancel)
    # then after day 1 Stripe was never asked to pay again, and the open invoice was voided
    assert _pay_days(START, paid) == [1]
    assert stripe_client.v1.invoices.retrieve(renewal.invoice_id).status == "void"
    case.refresh_from_db()
    assert (case.stage, case.close_reason) == ("stopped", "subscription cancelled")
    assert set(case.attempts.filter(number__gt=1).values_list("status", flat=True)) == {"cancelled"}
    # and, its renewal unpaid, the subscription ended at once: no access to a period never paid for,
    # nothing left to resume
    assert Subscription.objects.get(pk=renewal.subscription.pk).status == "cancelled"
    assert (
        stripe_client.v1.subscriptions.retrieve(renewal.subscription.stripe_subscription_id).status
        == "canceled"
    )


def test_retries_cross_a_month_end_and_the_leap_day(
    failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    start = datetime(2028, 2, 26, 10, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as traveller:
        renewal = failed_renewal()
        case = renewal.deliver_failed(stripe_client)
        assert case is not None
        paid = _walk(traveller, start, range(1, 16))
    # then the retries ran on 27 Feb, 29 Feb (the leap day), 2 and 4 March; the cancel on 11 March
    dates = [(start + timedelta(days=day)).date().isoformat() for day in _pay_days(start, paid)]
    assert dates == ["2028-02-27", "2028-02-29", "2028-03-02", "2028-03-04"]
    case.refresh_from_db()
    assert case.stage == "cancelled"
    assert case.closed_at is not None
    assert case.closed_at.date().isoformat() == "2028-03-11"
