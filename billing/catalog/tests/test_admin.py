"""Catalog editing in the staff console: finance edits plans (feature limits, list prices) and zone
prices, typed in real units of the currency; support only reads."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.forms import CheckboxInput
from django.test import Client

from billing.catalog.tests.factories import (
    FeatureFactory,
    PlanFactory,
    PlanFeatureFactory,
    PriceFactory,
    PricingZoneFactory,
    ZonePriceFactory,
)
from billing.forms import MoneyInput
from billing.models import PlanFeature, Price, ZonePrice
from payments_project.accounts.tests.factories import UserFactory


def _staff(role: str | None) -> Any:
    user = UserFactory(username=role or "root", is_staff=True, is_superuser=role is None)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def _form_data(page: Any) -> dict[str, Any]:
    """What the browser would post back unchanged from an admin change page (form and inlines)."""
    data: dict[str, Any] = {}
    forms = [("", page.context["adminform"].form)]
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        for key, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{key}"] = value
        forms += [("", form) for form in formset.forms]
    for _, form in forms:
        for name, field in form.fields.items():
            bound = form[name]
            value = bound.value()
            if isinstance(field.widget, CheckboxInput):
                if value:
                    data[bound.html_name] = "on"
                continue
            if isinstance(field.widget, MoneyInput):
                value = field.widget.format_value(value)
            data[bound.html_name] = "" if value is None else value
    return data


@pytest.fixture
def pro() -> Any:
    plan = PlanFactory(code="pro")
    PlanFeatureFactory(plan=plan, feature=FeatureFactory(code="projects", kind="limit"), limit=50)
    PriceFactory(plan=plan, currency="EUR", amount=899)
    return plan


@pytest.mark.django_db
@pytest.mark.parametrize("role", [None, "finance"])
def test_the_plan_pages_render_with_editable_features_and_prices(role: str | None, pro: Any) -> None:
    client = Client()
    client.force_login(_staff(role))
    add = client.get("/admin/billing/plan/add/")
    change = client.get(f"/admin/billing/plan/{pro.pk}/change/")
    assert (add.status_code, change.status_code) == (200, 200)
    page = change.content.decode()
    assert 'name="plan_features-0-limit"' in page
    assert 'name="prices-0-amount" value="8.99"' in page
    assert '<span class="bo-currency">EUR</span>' in page


@pytest.mark.django_db
def test_finance_changes_a_feature_limit_and_types_a_price_in_real_units(pro: Any) -> None:
    # given finance on the plan's page
    client = Client()
    client.force_login(_staff("finance"))
    url = f"/admin/billing/plan/{pro.pk}/change/"
    data = _form_data(client.get(url))

    # when they set the project limit to 75 and the EUR price to 7.99, and add a JPY price
    data["plan_features-0-limit"] = "75"
    data["prices-0-amount"] = "7.99"
    data.update({"prices-TOTAL_FORMS": 2, "prices-1-currency": "JPY", "prices-1-amount": "14800"})
    data["prices-1-active"] = "on"
    response = client.post(url, data)

    # then they are stored in minor units
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    assert PlanFeature.objects.get(plan=pro).limit == 75
    assert sorted(Price.objects.filter(plan=pro).values_list("currency", "amount")) == [
        ("EUR", 799),
        ("JPY", 14800),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("currency", "typed", "error"),
    [
        ("EUR", "7.999", "EUR has 2 decimals; 7.999 has 3. Nothing is rounded."),
        ("JPY", "100.5", "JPY has no decimals; 100.5 has 1. Nothing is rounded."),
        ("EUR", "7,99", "Type digits, with a dot before any decimals, e.g. 7.99."),
    ],
)
def test_a_price_with_too_many_decimals_is_a_field_error_and_nothing_changes(
    pro: Any, currency: str, typed: str, error: str
) -> None:
    client = Client()
    client.force_login(_staff("finance"))
    url = f"/admin/billing/plan/{pro.pk}/change/"
    data = _form_data(client.get(url))
    data["prices-0-currency"], data["prices-0-amount"] = currency, typed
    data["plan_features-0-limit"] = "75"

    response = client.post(url, data)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert list(Price.objects.filter(plan=pro).values_list("currency", "amount")) == [("EUR", 899)]
    assert PlanFeature.objects.get(plan=pro).limit == 50


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("currency", "typed", "stored"), [("EUR", "7.99", 799), ("JPY", "14800", 14800), ("KWD", "6.000", 6000)]
)
def test_finance_types_a_zone_price_in_the_zones_currency(currency: str, typed: str, stored: int) -> None:
    # given a zone with an explicit price for Pro
    pro = PlanFactory(code="pro")
    zone = PricingZoneFactory(code="z", currency=currency)
    ZonePriceFactory(zone=zone, plan=pro, amount=1000)
    client = Client()
    client.force_login(_staff("finance"))
    url = f"/admin/billing/pricingzone/{zone.pk}/change/"
    data = _form_data(client.get(url))

    # when finance types the new price in real units
    data["zone_prices-0-amount"] = typed
    response = client.post(url, data)

    # then it is stored in minor units of the zone's currency
    assert response.status_code == 302
    assert ZonePrice.objects.get(zone=zone).amount == stored


@pytest.mark.django_db
def test_a_new_zone_and_its_prices_are_typed_in_its_currency() -> None:
    pro = PlanFactory(code="pro")
    client = Client()
    client.force_login(_staff("finance"))
    data = {
        "code": "japan",
        "name": "Japan",
        "currency": "JPY",
        "multiplier": "1",
        "rounding": "exact",
        "countries-TOTAL_FORMS": 1,
        "countries-INITIAL_FORMS": 0,
        "countries-0-country": "JP",
        "zone_prices-TOTAL_FORMS": 1,
        "zone_prices-INITIAL_FORMS": 0,
        "zone_prices-0-plan": pro.pk,
        "zone_prices-0-amount": "1480.5",
    }
    refused = client.post("/admin/billing/pricingzone/add/", data)
    data["zone_prices-0-amount"] = "1480"
    saved = client.post("/admin/billing/pricingzone/add/", data)

    assert refused.status_code == 200
    assert "JPY has no decimals; 1480.5 has 1. Nothing is rounded." in refused.content.decode()
    assert saved.status_code == 302
    assert list(ZonePrice.objects.values_list("zone__code", "amount")) == [("japan", 1480)]


@pytest.mark.django_db
def test_support_reads_a_plan_but_cannot_change_it(pro: Any) -> None:
    client = Client()
    client.force_login(_staff("support"))
    url = f"/admin/billing/plan/{pro.pk}/change/"
    page = client.get(url)
    posted = client.post(url, {"code": "pro", "name": "Changed"})
    assert page.status_code == 200
    assert 'name="prices-0-amount"' not in page.content.decode()
    assert "€8.99" in page.content.decode()
    assert posted.status_code == 403
