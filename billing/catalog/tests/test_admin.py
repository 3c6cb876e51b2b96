"""Catalog editing in the staff console: finance edits plans (feature limits, list prices) and zone
prices, typed in real units of the currency; support only reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.forms import CheckboxInput
from django.test import Client

from billing.catalog.tests.factories import (
    FeatureFactory,
    MeteredPriceFactory,
    PlanFactory,
    PlanFeatureFactory,
    PriceFactory,
    PricingZoneFactory,
    ZoneCountryFactory,
    ZonePriceFactory,
)
from billing.forms import MoneyInput
from billing.models import (
    Feature,
    MeteredPrice,
    Plan,
    PlanFeature,
    Price,
    PricingZone,
    ZoneCountry,
    ZonePrice,
)
from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer
from payments_project.accounts.models import AuditLogEntry
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
def test_finance_sets_a_features_quota_policy_with_an_overage_allowance(pro: Any) -> None:
    # given finance on the plan's page, the project limit hard by default
    client = Client()
    client.force_login(_staff("finance"))
    url = f"/admin/billing/plan/{pro.pk}/change/"
    data = _form_data(client.get(url))

    # when they make it hard with a 20% overage allowance
    data["plan_features-0-quota_policy"] = "overage"
    data["plan_features-0-overage_percent"] = "20"
    response = client.post(url, data)

    # then the usage app reads that policy from the plan feature
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    assert PlanFeature.objects.filter(plan=pro).values_list("quota_policy", "overage_percent").get() == (
        "overage",
        20,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("percent", ["1001", "-1", "12.5", "x"])
def test_an_overage_allowance_out_of_range_is_a_field_error_and_nothing_changes(
    percent: str, pro: Any
) -> None:
    client = Client()
    client.force_login(_staff("finance"))
    url = f"/admin/billing/plan/{pro.pk}/change/"
    data = _form_data(client.get(url))
    data["plan_features-0-quota_policy"] = "overage"
    data["plan_features-0-overage_percent"] = percent

    response = client.post(url, data)

    assert response.status_code == 200
    assert response.context["inline_admin_formsets"][0].formset.errors[0].keys() == {"overage_percent"}
    assert PlanFeature.objects.filter(plan=pro).values_list("quota_policy", "overage_percent").get() == (
        "hard",
        0,
    )


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


# --- every staff edit of the catalog and every push to Stripe writes one audit entry --------------


def _add_row(page: Any, data: dict[str, Any], prefix: str, values: dict[str, Any]) -> None:
    """Add one inline row to the posted data: the empty form's defaults, then `values`."""
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        if formset.prefix != prefix:
            continue
        index = int(data[f"{prefix}-TOTAL_FORMS"])
        data[f"{prefix}-TOTAL_FORMS"] = index + 1
        for name, field in formset.empty_form.fields.items():
            value = formset.empty_form[name].value()
            if not isinstance(field.widget, CheckboxInput) and value is not None:
                data[f"{prefix}-{index}-{name}"] = value
        data.update({f"{prefix}-{index}-{key}": value for key, value in values.items()})
        return
    raise AssertionError(f"no inline {prefix}")


@pytest.fixture
def catalog(pro: Any) -> SimpleNamespace:
    """Pro (a limit, a EUR price), a zone with a country and a price for Pro, a metered price,
    and a plan and a feature not used yet."""
    zone = PricingZoneFactory(code="europe", currency="EUR")
    return SimpleNamespace(
        plan=pro,
        plan_feature=PlanFeature.objects.get(plan=pro),
        price=Price.objects.get(plan=pro),
        zone=zone,
        country=ZoneCountryFactory(zone=zone, country="FR"),
        zone_price=ZonePriceFactory(zone=zone, plan=pro, amount=799),
        metered=MeteredPriceFactory(zone=zone),
        other_plan=PlanFactory(code="max"),
        other_feature=FeatureFactory(code="seats", kind="limit"),
    )


@dataclass
class Edit:
    url: Callable[[SimpleNamespace], str]
    edit: Callable[[Any, dict[str, Any], SimpleNamespace], None]
    target: Callable[[SimpleNamespace], Any]  # the row acted on, found after the edit
    form: bool = True  # a change form to post back, else a delete confirmation


def _set(**values: Any) -> Callable[[Any, dict[str, Any], SimpleNamespace], None]:
    return lambda page, data, c: data.update(values)


def _plan_url(c: SimpleNamespace) -> str:
    return f"/admin/billing/plan/{c.plan.pk}/change/"


def _zone_url(c: SimpleNamespace) -> str:
    return f"/admin/billing/pricingzone/{c.zone.pk}/change/"


EDITS = {
    "feature.add": Edit(
        lambda c: "/admin/billing/feature/add/",
        _set(code="storage", name="Storage", kind="boolean"),
        lambda c: Feature.objects.get(code="storage"),
    ),
    "feature.change": Edit(
        lambda c: f"/admin/billing/feature/{c.other_feature.pk}/change/",
        _set(name="Team seats"),
        lambda c: c.other_feature,
    ),
    "plan.add": Edit(
        lambda c: "/admin/billing/plan/add/",
        _set(code="team", name="Team"),
        lambda c: Plan.objects.get(code="team"),
    ),
    "plan.change": Edit(_plan_url, _set(name="Pro 2"), lambda c: c.plan),
    "plan_feature.add": Edit(
        _plan_url,
        lambda page, data, c: _add_row(
            page, data, "plan_features", {"feature": c.other_feature.pk, "limit": 5}
        ),
        lambda c: PlanFeature.objects.get(plan=c.plan, feature=c.other_feature),
    ),
    "plan_feature.change": Edit(_plan_url, _set(**{"plan_features-0-limit": "75"}), lambda c: c.plan_feature),
    "plan_feature.delete": Edit(
        _plan_url, _set(**{"plan_features-0-DELETE": "on"}), lambda c: c.plan_feature
    ),
    "price.add": Edit(
        _plan_url,
        lambda page, data, c: _add_row(
            page, data, "prices", {"currency": "JPY", "amount": "1480", "active": "on"}
        ),
        lambda c: Price.objects.get(plan=c.plan, currency="JPY"),
    ),
    "price.change": Edit(_plan_url, _set(**{"prices-0-amount": "7.99"}), lambda c: c.price),
    "price.delete": Edit(_plan_url, _set(**{"prices-0-DELETE": "on"}), lambda c: c.price),
    "pricing_zone.add": Edit(
        lambda c: "/admin/billing/pricingzone/add/",
        _set(code="japan", name="Japan", currency="JPY", multiplier="1", rounding="exact"),
        lambda c: PricingZone.objects.get(code="japan"),
    ),
    "pricing_zone.change": Edit(_zone_url, _set(name="Europe 2"), lambda c: c.zone),
    "zone_country.add": Edit(
        _zone_url, _set(**{"countries-1-country": "DE"}), lambda c: ZoneCountry.objects.get(country="DE")
    ),
    "zone_country.change": Edit(_zone_url, _set(**{"countries-0-country": "BE"}), lambda c: c.country),
    "zone_country.delete": Edit(_zone_url, _set(**{"countries-0-DELETE": "on"}), lambda c: c.country),
    "zone_price.add": Edit(
        _zone_url,
        lambda page, data, c: _add_row(
            page, data, "zone_prices", {"plan": c.other_plan.pk, "amount": "19.00"}
        ),
        lambda c: ZonePrice.objects.get(plan=c.other_plan),
    ),
    "zone_price.change": Edit(_zone_url, _set(**{"zone_prices-0-amount": "6.99"}), lambda c: c.zone_price),
    "zone_price.delete": Edit(_zone_url, _set(**{"zone_prices-0-DELETE": "on"}), lambda c: c.zone_price),
    "metered_price.add": Edit(
        lambda c: "/admin/billing/meteredprice/add/",
        lambda page, data, c: data.update(
            plan_feature=c.metered.plan_feature_id,
            zone=PricingZoneFactory(code="asia").pk,
            unit_amount="0.05",
        ),
        lambda c: MeteredPrice.objects.get(zone__code="asia"),
    ),
    "metered_price.change": Edit(
        lambda c: f"/admin/billing/meteredprice/{c.metered.pk}/change/",
        _set(unit_amount="0.03"),
        lambda c: c.metered,
    ),
    "metered_price.delete": Edit(
        lambda c: f"/admin/billing/meteredprice/{c.metered.pk}/delete/",
        _set(post="yes"),
        lambda c: c.metered,
        form=False,
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("action", list(EDITS))
def test_each_catalog_edit_by_finance_writes_one_audit_entry(action: str, catalog: SimpleNamespace) -> None:
    # given finance on the page of the edit
    staff = _staff("finance")
    client = Client()
    client.force_login(staff)
    edit = EDITS[action]
    url = edit.url(catalog)
    page = client.get(url)
    data = _form_data(page) if edit.form else {}

    # when they make that one edit and save
    edit.edit(page, data, catalog)
    response = client.post(url, data)

    # then it is saved, and the audit log has one entry: the edit, its row, by them
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    target = edit.target(catalog)
    assert list(AuditLogEntry.objects.values_list("action", "target_type", "target_id", "actor_id")) == [
        (action, target._meta.label_lower, str(target.pk), staff.pk)
    ]


@pytest.mark.django_db
def test_a_page_saved_unchanged_writes_no_audit_entry(catalog: SimpleNamespace) -> None:
    client = Client()
    client.force_login(_staff("finance"))
    url = _plan_url(catalog)
    response = client.post(url, _form_data(client.get(url)))
    assert response.status_code == 302
    assert AuditLogEntry.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "action"),
    [
        ("/admin/billing/plan/{plan}/delete/", "plan.delete"),
        ("/admin/billing/feature/{feature}/delete/", "feature.delete"),
        ("/admin/billing/pricingzone/{zone}/delete/", "pricing_zone.delete"),
    ],
)
def test_a_superuser_deleting_a_plan_a_feature_or_a_zone_writes_one_audit_entry(
    url: str, action: str, catalog: SimpleNamespace
) -> None:
    staff = _staff(None)
    client = Client()
    client.force_login(staff)
    target = {"plan.delete": catalog.plan, "feature.delete": catalog.other_feature}.get(action, catalog.zone)

    response = client.post(
        url.format(plan=catalog.plan.pk, feature=catalog.other_feature.pk, zone=catalog.zone.pk),
        {"post": "yes"},
    )

    assert response.status_code == 302
    assert list(AuditLogEntry.objects.values_list("action", "target_type", "target_id", "actor_id")) == [
        (action, target._meta.label_lower, str(target.pk), staff.pk)
    ]


@pytest.mark.django_db
def test_deleting_metered_prices_from_the_list_writes_one_entry_each(catalog: SimpleNamespace) -> None:
    staff = _staff("finance")
    client = Client()
    client.force_login(staff)
    second = MeteredPriceFactory(zone=catalog.zone)

    response = client.post(
        "/admin/billing/meteredprice/",
        {"action": "delete_selected", "_selected_action": [catalog.metered.pk, second.pk], "post": "yes"},
    )

    assert response.status_code == 302
    assert not MeteredPrice.objects.exists()
    assert sorted(AuditLogEntry.objects.values_list("action", "target_id", "actor_id")) == sorted(
        [
            ("metered_price.delete", str(catalog.metered.pk), staff.pk),
            ("metered_price.delete", str(second.pk), staff.pk),
        ]
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changelist", "action", "target_type", "created"),
    [
        ("/admin/billing/plan/", "catalog.push_to_stripe", "billing.plan", 2),
        ("/admin/billing/meteredprice/", "metered_prices.push_to_stripe", "billing.meteredprice", 1),
    ],
)
def test_each_push_to_stripe_by_finance_writes_one_audit_entry(
    changelist: str, action: str, target_type: str, created: int, stripe_standin: StandinServer
) -> None:
    # given a catalog with a list price and a metered price, nothing of it at Stripe yet
    plan = PlanFactory(code="pro")
    PriceFactory(plan=plan, currency="EUR", amount=899)
    metered = MeteredPriceFactory(zone=PricingZoneFactory(code="europe", currency="EUR"))
    staff = _staff("finance")
    client = Client()
    client.force_login(staff)

    # when finance runs the page's push action
    selected = plan.pk if "plan" in changelist else metered.pk
    response = client.post(changelist, {"action": "push_to_stripe", "_selected_action": [selected]})

    # then the push ran, and one entry records it, on the whole table, with what it created
    assert response.status_code == 302
    assert list(
        AuditLogEntry.objects.values_list("action", "target_type", "target_id", "actor_id", "data")
    ) == [(action, target_type, "", staff.pk, {"created": created})]


@pytest.mark.django_db
def test_a_failed_push_is_audited_with_its_error(settings: Any) -> None:
    settings.STRIPE_API_BASE, settings.STRIPE_MAX_NETWORK_RETRIES = "http://127.0.0.1:1", 0
    stripe_gateway.client.cache_clear()
    plan = PlanFactory(code="pro")
    PriceFactory(plan=plan, currency="EUR", amount=899)
    staff = _staff("finance")
    client = Client()
    client.force_login(staff)

    action = {"action": "push_to_stripe", "_selected_action": [plan.pk]}
    response = client.post("/admin/billing/plan/", action)
    stripe_gateway.client.cache_clear()

    assert response.status_code == 302
    entry = AuditLogEntry.objects.get()
    assert (entry.action, entry.target_type, entry.actor_id) == (
        "catalog.push_to_stripe",
        "billing.plan",
        staff.pk,
    )
    assert list(entry.data) == ["error"]
