"""Pushing the catalog to Stripe, against the stand-in through the official SDK."""

from pathlib import Path

import pytest
import stripe
import yaml
from django.test import Client

from billing.catalog.services import catalog_load, catalog_push_items, catalog_push_to_stripe
from billing.models import MeteredPrice, Plan, StripePrice
from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo_catalog.yaml"


@pytest.mark.django_db
def test_push_creates_every_price_once_and_a_second_push_creates_none(
    stripe_standin: StandinServer,
) -> None:
    # given the demo catalog
    catalog_load(data=yaml.safe_load(DEMO.read_text()))
    items = catalog_push_items()

    # when it is pushed twice
    first = catalog_push_to_stripe()
    second = catalog_push_to_stripe()

    # then each distinct (plan, currency, amount) became one Stripe price, once, and so did each
    # metered price (Pro's API calls in five zones)
    assert len(items) == StripePrice.objects.count() == 22
    assert first == 22 + 5
    assert MeteredPrice.objects.filter(stripe_price_id__isnull=False).count() == 5
    assert second == 0
    pro = Plan.objects.get(code="pro")
    assert pro.stripe_product_id == "prod_plan_pro"
    # Japan pays list yen for Pro; latam pays 999 x 0.6 charm-rounded = 599 cents
    jpy = StripePrice.objects.get(plan=pro, currency="JPY", amount=1500)
    latam = StripePrice.objects.get(plan=pro, currency="USD", amount=599)
    sdk = stripe_gateway.client()
    remote = sdk.v1.prices.retrieve(jpy.stripe_price_id)
    assert (remote.unit_amount, remote.currency, remote.product) == (1500, "jpy", "prod_plan_pro")
    assert remote.recurring is not None and remote.recurring.interval == "month"
    assert sdk.v1.prices.retrieve(latam.stripe_price_id).unit_amount == 599


@pytest.mark.django_db
def test_push_with_stripe_unreachable_fails_fast_once_the_breaker_opens(settings) -> None:  # type: ignore[no-untyped-def]
    # given Stripe at a closed port and a breaker that opens after 2 outages
    settings.STRIPE_API_BASE = "http://127.0.0.1:1"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_gateway.client.cache_clear()
    stripe_gateway.breaker.fail_max = 2
    catalog_load(data={"plans": [{"code": "p", "prices": {"USD": 100}}]})
    codes = []
    try:
        # when three pushes are tried
        for _ in range(3):
            try:
                catalog_push_to_stripe()
            except stripe_gateway.StripeUnavailable as exc:
                codes.append((exc.message, exc.headers.get("Retry-After")))
    finally:
        stripe_gateway.breaker.fail_max = settings.STRIPE_BREAKER_FAIL_MAX
        stripe_gateway.client.cache_clear()

    # then the first two reach the network, the third is refused by the open breaker at once
    assert codes == [
        ("Stripe did not answer; try again shortly.", "5"),
        ("Stripe is unavailable; try again shortly.", "30"),
        ("Stripe is unavailable; try again shortly.", "30"),
    ]
    assert stripe_gateway.breaker_state() == "open"
    assert StripePrice.objects.count() == 0
    # and /health shows Stripe down through the breaker, without calling Stripe
    health = Client().get("/health").json()
    assert health["components"]["stripe"]["status"] == "down"
    assert health["components"]["stripe"]["circuit_breaker"] == "open"


def test_card_errors_are_not_outages() -> None:
    # a declined card is Stripe answering: it never counts towards opening the breaker
    declined = stripe.CardError("declined", param=None, code="card_declined")
    assert stripe_gateway._is_outage(declined) is False
    assert stripe_gateway._is_outage(stripe.APIConnectionError("down")) is True


@pytest.mark.django_db
def test_a_plan_moved_to_another_interval_gets_a_new_stripe_price(stripe_standin: StandinServer) -> None:
    # given a monthly plan pushed at 10.00 USD
    catalog_load(data={"plans": [{"code": "p", "interval": "month", "prices": {"USD": 1000}}]})
    catalog_push_to_stripe()

    # when finance makes it yearly at the same amount and pushes again
    catalog_load(data={"plans": [{"code": "p", "interval": "year", "prices": {"USD": 1000}}]})
    created = catalog_push_to_stripe()

    # then a yearly Stripe price exists beside the monthly one
    assert created == 1
    rows = sorted(StripePrice.objects.values_list("interval", "amount"))
    assert rows == [("month", 1000), ("year", 1000)]
    yearly = StripePrice.objects.get(interval="year")
    remote = stripe_gateway.client().v1.prices.retrieve(yearly.stripe_price_id)
    assert remote.recurring is not None and remote.recurring.interval == "year"
