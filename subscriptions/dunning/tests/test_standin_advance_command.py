"""manage.py stripe_standin_advance against the stand-in."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import stripe
from django.core.management import CommandError, call_command
from django.utils import timezone

from devtools.testing import StandinServer
from subscriptions.dunning.tests.factories import DunningAttemptFactory, DunningCaseFactory


@pytest.mark.django_db
def test_advancing_renews_a_due_subscription(
    stripe_standin: StandinServer, stripe_client: stripe.StripeClient
) -> None:
    product = stripe_client.v1.products.create({"name": "Pro"})
    price = stripe_client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 900, "recurring": {"interval": "month"}}
    )
    customer = stripe_client.v1.customers.create({"email": "ada@example.com"})
    card = stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    stripe_client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    out = io.StringIO()
    call_command("stripe_standin_advance", "--days", "3", stdout=out)
    assert (
        out.getvalue().splitlines()[-1]
        == "stand-in clock moved 3 day(s) 0 hour(s); 0 renewal invoice(s) issued"
    )
    call_command("stripe_standin_advance", "--days", "30", stdout=out)
    latest = stripe_client.v1.subscriptions.retrieve(subscription.id).latest_invoice
    assert f"1 renewal invoice(s) issued: {latest}" in out.getvalue()


def test_it_refuses_nothing_and_stripe_itself(settings) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match="1 hour to 5 years"):
        call_command("stripe_standin_advance", "--days", "0", "--hours", "-1")
    settings.STRIPE_API_BASE = "https://api.stripe.com"
    with pytest.raises(CommandError, match="Stripe itself"):
        call_command("stripe_standin_advance", "--days", "1")


@pytest.mark.django_db
def test_open_dunning_cases_live_the_same_days(stripe_standin: StandinServer) -> None:
    case = DunningCaseFactory(opened_at=timezone.now(), cancel_at=timezone.now() + timedelta(days=14))
    attempt = DunningAttemptFactory(case=case, number=1, due_at=case.opened_at + timedelta(days=1))
    out = io.StringIO()
    call_command("stripe_standin_advance", "--days", "2", stdout=out)
    attempt.refresh_from_db()
    assert attempt.due_at == case.opened_at - timedelta(days=1)
    # claimed by the sweep the command ran, and run (eager): Stripe knows no such invoice
    assert (attempt.status, attempt.outcome.split(":")[0]) == ("failed", "stripe_invalid_request")
    assert "dunning: 1 open case(s) moved on; 1 retry(ies) and 0 cancellation(s) queued" in out.getvalue()
