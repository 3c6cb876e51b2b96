"""Metered prices: a plan feature billed per unit in a zone's currency; shown by the plans API,
pushed to Stripe as a metered price on the feature's meter, edited by finance in the admin."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from rest_framework.test import APIClient

from billing.catalog.services import CatalogError, catalog_load, metered_prices_push
from billing.catalog.tests.factories import (
    FeatureFactory,
    MeteredPriceFactory,
    PlanFactory,
    PlanFeatureFactory,
    PricingZoneFactory,
    ZoneCountryFactory,
)
from billing.metering.models import StripeMeter
from billing.models import Feature, MeteredPrice, Plan
from billing.stripe import gateway as stripe_gateway
from payments_project.accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def zones() -> dict[str, Any]:
    euro = PricingZoneFactory(code="euro", name="Euro", currency="EUR", is_default=True)
    ZoneCountryFactory(zone=euro, country="FR")
    japan = PricingZoneFactory(code="japan", name="Japan", currency="JPY")
    ZoneCountryFactory(zone=japan, country="JP")
    return {"euro": euro, "japan": japan}


@pytest.fixture
def api_calls(zones: dict[str, Any]) -> Any:
    plan = PlanFactory(code="pro", name="Pro")
    feature = FeatureFactory(
        code="api_calls",
        name="API calls",
        kind=Feature.Kind.METERED,
        unit="calls",
        meter_event_name="api_calls",
    )
    plan_feature = PlanFeatureFactory(plan=plan, feature=feature)
    MeteredPriceFactory(plan_feature=plan_feature, zone=zones["euro"], unit_amount=2)
    MeteredPriceFactory(plan_feature=plan_feature, zone=zones["japan"], unit_amount=3)
    return plan_feature


def _feature(api_client: APIClient, country: str) -> dict[str, Any]:
    response = api_client.get(f"/api/v1/plans/pro/?country={country}")
    assert response.status_code == 200
    return next(f for f in response.json()["features"] if f["code"] == "api_calls")


def test_plans_api_shows_the_metered_price_in_the_zones_currency(
    api_client: APIClient, api_calls: Any
) -> None:
    assert _feature(api_client, "FR")["metered_price"] == {
        "unit_amount": 2,
        "currency": "EUR",
        "display": "€0.02",
        "unit": "calls",
    }
    assert _feature(api_client, "JP")["metered_price"] == {
        "unit_amount": 3,
        "currency": "JPY",
        "display": "¥3",
        "unit": "calls",
    }


def test_a_zone_without_a_metered_price_shows_none(api_client: APIClient, api_calls: Any) -> None:
    gulf = PricingZoneFactory(code="gulf", currency="KWD")
    ZoneCountryFactory(zone=gulf, country="KW")
    assert _feature(api_client, "KW")["metered_price"] is None


def test_push_creates_the_meter_and_a_metered_price_per_zone_once(
    stripe_standin: Any, api_calls: Any
) -> None:
    # when
    first = metered_prices_push()
    second = metered_prices_push()
    # then
    assert (first, second) == (2, 0)
    meter = StripeMeter.objects.get(event_name="api_calls")
    client = stripe_gateway.client()
    for row in MeteredPrice.objects.select_related("zone"):
        price = client.v1.prices.retrieve(str(row.stripe_price_id))
        assert price.currency == row.zone.currency.lower()
        assert price.unit_amount == row.unit_amount
        assert price.recurring.usage_type == "metered"
        assert price.recurring.meter == meter.stripe_meter_id
        assert price.recurring.interval == "month"
        assert price.product == "prod_plan_pro"
    assert client.v1.billing.meters.retrieve(meter.stripe_meter_id).event_name == "api_calls"


def test_a_new_unit_amount_is_pushed_as_a_new_stripe_price(stripe_standin: Any, api_calls: Any) -> None:
    # given
    metered_prices_push()
    row = MeteredPrice.objects.get(zone__code="euro")
    old_price = row.stripe_price_id
    # when
    MeteredPrice.objects.filter(pk=row.pk).update(unit_amount=5)
    created = metered_prices_push()
    # then
    row.refresh_from_db()
    assert created == 1
    assert row.stripe_price_id != old_price
    assert stripe_gateway.client().v1.prices.retrieve(str(row.stripe_price_id)).unit_amount == 5


def test_push_skips_a_feature_without_a_meter_event_name(stripe_standin: Any, api_calls: Any) -> None:
    Feature.objects.filter(code="api_calls").update(meter_event_name="")
    assert metered_prices_push() == 0
    assert MeteredPrice.objects.filter(stripe_price_id__isnull=False).count() == 0


# --- admin ----------------------------------------------------------------------------------------


def _login(role: str | None) -> Client:
    user = UserFactory(username=role or "root", is_staff=True, is_superuser=role is None)
    if role:
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def test_finance_adds_a_metered_price_in_real_units(zones: dict[str, Any]) -> None:
    # given
    plan_feature = PlanFeatureFactory(
        plan=PlanFactory(code="pro"),
        feature=FeatureFactory(code="api_calls", kind=Feature.Kind.METERED, meter_event_name="api_calls"),
    )
    # when finance types 0.05 EUR per call
    response = _login("finance").post(
        "/admin/billing/meteredprice/add/",
        {"plan_feature": plan_feature.pk, "zone": zones["euro"].pk, "unit_amount": "0.05"},
    )
    # then it is stored in cents
    assert response.status_code == 302
    row = MeteredPrice.objects.get()
    assert (row.plan_feature_id, row.zone_id, row.unit_amount) == (plan_feature.pk, zones["euro"].pk, 5)


@pytest.mark.parametrize(
    ("typed", "meter_event_name", "interval", "field", "message"),
    [
        (
            "0.005",
            "api_calls",
            Plan.Interval.MONTH,
            "unit_amount",
            "EUR has 2 decimals; 0.005 has 3. Nothing is rounded.",
        ),
        ("0", "api_calls", Plan.Interval.MONTH, "unit_amount", "At least 0.01 EUR."),
        (
            "0.05",
            "",
            Plan.Interval.MONTH,
            "plan_feature",
            "Give the feature a meter event name first: usage is reported under it.",
        ),
        (
            "0.05",
            "api_calls",
            Plan.Interval.ONE_TIME,
            "plan_feature",
            "A one-time plan has no billing period to bill usage in.",
        ),
    ],
    ids=["too_many_decimals", "zero", "no_meter", "one_time_plan"],
)
def test_the_form_refuses_what_cannot_be_billed(
    zones: dict[str, Any], typed: str, meter_event_name: str, interval: str, field: str, message: str
) -> None:
    plan_feature = PlanFeatureFactory(
        plan=PlanFactory(code="pro", interval=interval),
        feature=FeatureFactory(
            code="api_calls", kind=Feature.Kind.METERED, meter_event_name=meter_event_name
        ),
    )
    response = _login("finance").post(
        "/admin/billing/meteredprice/add/",
        {"plan_feature": plan_feature.pk, "zone": zones["euro"].pk, "unit_amount": typed},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors[field] == [message]
    assert MeteredPrice.objects.count() == 0


@pytest.mark.parametrize(("role", "status"), [(None, 200), ("finance", 200), ("support", 403)])
def test_who_may_add_a_metered_price(role: str | None, status: int) -> None:
    assert _login(role).get("/admin/billing/meteredprice/add/").status_code == status


def test_support_reads_metered_prices(api_calls: Any) -> None:
    page = _login("support").get("/admin/billing/meteredprice/")
    assert page.status_code == 200
    assert "€0.02" in page.content.decode()


# --- catalog file ---------------------------------------------------------------------------------

CATALOG: dict[str, Any] = {
    "features": [{"code": "api_calls", "kind": "metered", "meter_event_name": "api_calls"}],
    "plans": [
        {
            "code": "pro",
            "features": [{"feature": "api_calls", "metered_prices": {"euro": 2, "japan": 3}}],
            "prices": {"EUR": 900},
        }
    ],
    "zones": [{"code": "euro", "currency": "EUR"}, {"code": "japan", "currency": "JPY"}],
}


def test_the_catalog_file_loads_metered_prices_per_zone() -> None:
    result = catalog_load(data=CATALOG)
    assert result.created["metered_prices"] == 2
    assert sorted(MeteredPrice.objects.values_list("zone__code", "unit_amount")) == [
        ("euro", 2),
        ("japan", 3),
    ]
    assert Feature.objects.get().meter_event_name == "api_calls"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"meter_event_name": ""},
            "plan pro feature api_calls: metered prices need the feature's meter_event_name",
        ),
        ({"zone": "mars"}, "plan pro feature api_calls: unknown zone 'mars'"),
        ({"amount": 0}, "plan pro feature api_calls metered price euro: at least 1 minor unit per unit"),
    ],
    ids=["no_meter", "unknown_zone", "zero"],
)
def test_the_catalog_file_refuses_unbillable_metered_prices(change: dict[str, Any], message: str) -> None:
    data = copy.deepcopy(CATALOG)
    if "meter_event_name" in change:
        data["features"][0]["meter_event_name"] = change["meter_event_name"]
    if "zone" in change:
        data["plans"][0]["features"][0]["metered_prices"] = {change["zone"]: 2}
    if "amount" in change:
        data["plans"][0]["features"][0]["metered_prices"] = {"euro": change["amount"]}
    with pytest.raises(CatalogError) as caught:
        catalog_load(data=data)
    assert caught.value.message == message
    assert MeteredPrice.objects.count() == 0
