"""Checkout over HTTP, against the Stripe stand-in through the official SDK."""

import pytest

from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.helpers import token_client


@pytest.fixture
def ana():  # type: ignore[no-untyped-def]
    return UserFactory(username="ana")


@pytest.mark.django_db
def test_checkout_session_for_a_plan_at_the_zone_price(stripe_standin: StandinServer, ana, settings) -> None:  # type: ignore[no-untyped-def]
    # given Pro sold in euros, and a trusted proxy naming the client's country
    settings.PRICING_COUNTRY_HEADER = "CF-IPCountry"
    from billing.catalog.tests.factories import (
        PlanFactory,
        PriceFactory,
        PricingZoneFactory,
        ZoneCountryFactory,
    )

    PriceFactory(plan=PlanFactory(code="pro", trial_days=14), currency="EUR", amount=899)
    ZoneCountryFactory(zone=PricingZoneFactory(code="euro", currency="EUR"), country="FR")

    # when ana opens a checkout from France
    response = token_client(ana).post(
        "/api/v1/checkout-sessions/",
        {"plan": "pro", "success_url": "https://x.test/ok", "cancel_url": "https://x.test/no"},
        format="json",
        HTTP_CF_IPCOUNTRY="FR",
    )

    # then a Stripe session bills 8.99 EUR a month, for her
    assert response.status_code == 201
    body = response.json()
    assert (body["mode"], body["plan"], body["amount"], body["currency"], body["zone"]) == (
        "subscription",
        "pro",
        899,
        "EUR",
        "euro",
    )
    session = stripe_gateway.client().v1.checkout.sessions.retrieve(body["id"], {"expand": ["line_items"]})
    assert session.url == body["url"]
    assert session.metadata.to_dict() == {"user_id": str(ana.pk), "plan_code": "pro", "pricing_zone": "euro"}
    assert session.line_items.data[0].price.unit_amount == 899


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["trialing", "active", "past_due", "unpaid", "paused", "suspended"])
def test_checkout_is_refused_while_a_subscription_runs(stripe_standin: StandinServer, ana, status) -> None:  # type: ignore[no-untyped-def]
    from billing.catalog.tests.factories import PlanFactory, PriceFactory
    from subscriptions.tests.factories import SubscriptionFactory

    PriceFactory(plan=PlanFactory(code="pro"), currency="USD", amount=999)
    # given a subscription that has started and not ended, suspended included
    running = SubscriptionFactory(user=ana, status=status)
    response = token_client(ana).post(
        "/api/v1/checkout-sessions/",
        {"plan": "pro", "success_url": "https://x.test/ok", "cancel_url": "https://x.test/no"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_subscribed"
    assert response.json()["error"]["subscription_id"] == str(running.pk)


@pytest.mark.django_db
def test_checkout_for_an_unknown_plan_is_404(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    response = token_client(ana).post(
        "/api/v1/checkout-sessions/",
        {"plan": "nope", "success_url": "https://x.test/ok", "cancel_url": "https://x.test/no"},
        format="json",
    )
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "No active plan 'nope'.",
        "fields": {},
    }


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["cancelled", "incomplete_expired"])
def test_checkout_is_open_again_once_the_subscription_ended(
    stripe_standin: StandinServer, ana, status
) -> None:  # type: ignore[no-untyped-def]
    from billing.catalog.tests.factories import PlanFactory, PriceFactory
    from subscriptions.tests.factories import SubscriptionFactory

    # given a subscription that ended
    PriceFactory(plan=PlanFactory(code="pro"), currency="USD", amount=999)
    SubscriptionFactory(user=ana, status=status)

    # when she checks out again
    response = token_client(ana).post(
        "/api/v1/checkout-sessions/",
        {"plan": "pro", "success_url": "https://x.test/ok", "cancel_url": "https://x.test/no"},
        format="json",
    )

    # then a new session is opened
    assert response.status_code == 201
    assert (response.json()["mode"], response.json()["amount"]) == ("subscription", 999)
