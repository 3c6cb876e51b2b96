from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from billing.catalog.tests.factories import (
    FeatureFactory,
    PlanFactory,
    PlanFeatureFactory,
    PriceFactory,
    PricingZoneFactory,
    ZoneCountryFactory,
    ZonePriceFactory,
)
from billing.models import PlanFeature


@pytest.fixture
def catalog() -> None:
    pro = PlanFactory(code="pro", name="Pro", trial_days=14, sort_order=1)
    PlanFeatureFactory(plan=pro, feature=FeatureFactory(code="export_pdf", name="PDF export"))
    PlanFeatureFactory(
        plan=pro,
        feature=FeatureFactory(code="api_calls", name="API calls", kind="metered"),
        limit=10000,
        reset_period=PlanFeature.Reset.BILLING_PERIOD,
    )
    for currency, amount in {"USD": 999, "JPY": 1500, "KWD": 3000}.items():
        PriceFactory(plan=pro, currency=currency, amount=amount)
    PricingZoneFactory(code="global", currency="USD", is_default=True)
    japan = PricingZoneFactory(
        code="japan", name="Japan", currency="JPY", multiplier=Decimal("0.75"), rounding="charm"
    )
    ZoneCountryFactory(zone=japan, country="JP")
    gulf = PricingZoneFactory(code="gulf", name="Gulf", currency="KWD", multiplier=Decimal("0.9"))
    ZoneCountryFactory(zone=gulf, country="KW")
    euro = PricingZoneFactory(code="euro", name="Euro", currency="EUR")
    ZoneCountryFactory(zone=euro, country="FR")
    PlanFactory(code="retired", active=False)


@pytest.mark.django_db
def test_plans_in_japan_are_priced_in_whole_yen(api_client: APIClient, catalog: None) -> None:
    # when an anonymous visitor asks for the plans in Japan
    response = api_client.get("/api/v1/plans/?country=jp")

    # then the active plan comes with its yen price (1500 x 0.75 = 1125, charm-rounded to 1199)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    plan = body["results"][0]
    assert plan["code"] == "pro"
    assert plan["price"] == {"amount": 1199, "currency": "JPY", "display": "¥1,199", "source": "multiplier"}
    assert plan["zone"] == {"code": "japan", "name": "Japan", "currency": "JPY"}
    # features come in feature-code order
    assert plan["features"] == [
        {
            "code": "api_calls",
            "name": "API calls",
            "kind": "metered",
            "limit": 10000,
            "unlimited": False,
            "reset_period": "billing_period",
            "metered_price": None,
        },
        {
            "code": "export_pdf",
            "name": "PDF export",
            "kind": "boolean",
            "limit": None,
            "unlimited": True,
            "reset_period": "never",
            "metered_price": None,
        },
    ]


@pytest.mark.django_db
def test_plans_in_kuwait_are_priced_in_fils(api_client: APIClient, catalog: None) -> None:
    response = api_client.get("/api/v1/plans/?country=KW")
    assert response.json()["results"][0]["price"] == {
        "amount": 2700,
        "currency": "KWD",
        "display": "KWD 2.700",
        "source": "multiplier",
    }


@pytest.mark.django_db
def test_zone_price_override_wins_over_the_multiplier(api_client: APIClient, catalog: None) -> None:
    # given an explicit Japan price for Pro
    ZonePriceFactory(zone__code="japan2", zone__currency="JPY", plan__code="other", amount=1)
    from billing.models import Plan, PricingZone

    ZonePriceFactory(
        zone=PricingZone.objects.get(code="japan"), plan=Plan.objects.get(code="pro"), amount=980
    )

    # then the override is the price
    response = api_client.get("/api/v1/plans/pro/?country=JP")
    assert response.status_code == 200
    assert response.json()["price"] == {
        "amount": 980,
        "currency": "JPY",
        "display": "¥980",
        "source": "zone_price",
    }


@pytest.mark.django_db
def test_unknown_country_falls_back_to_the_default_zone(api_client: APIClient, catalog: None) -> None:
    response = api_client.get("/api/v1/plans/?country=US")
    assert response.json()["results"][0]["price"] == {
        "amount": 999,
        "currency": "USD",
        "display": "$9.99",
        "source": "multiplier",
    }


@pytest.mark.django_db
def test_a_plan_without_a_price_in_the_zone_currency_has_no_price(
    api_client: APIClient, catalog: None
) -> None:
    response = api_client.get("/api/v1/plans/?country=FR")
    assert response.json()["results"][0]["price"] is None


@pytest.mark.django_db
def test_a_malformed_country_is_a_400_in_the_error_format(api_client: APIClient, catalog: None) -> None:
    response = api_client.get("/api/v1/plans/?country=FRA")
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The request has invalid fields.",
            "fields": {
                "country": [{"code": "invalid", "message": "An ISO 3166-1 alpha-2 country code, e.g. FR."}]
            },
        }
    }


@pytest.mark.django_db
def test_plan_list_costs_a_fixed_number_of_queries(
    api_client: APIClient, catalog: None, django_assert_num_queries
) -> None:
    # given ten more plans with features and prices
    for n in range(10):
        plan = PlanFactory(code=f"extra{n}")
        PlanFeatureFactory(plan=plan)
        PriceFactory(plan=plan, currency="JPY", amount=100 * n)

    # then the list costs the same handful of queries whatever the number of plans
    with django_assert_num_queries(7):  # + the plan features' metered prices
        response = api_client.get("/api/v1/plans/?country=JP&page_size=50")
    assert response.json()["count"] == 11
