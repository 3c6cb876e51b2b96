"""Catalog changes announce themselves: catalog_load and the admin's plan and zone forms, deletions
included."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from django.db.models import Model
from django.test import Client

from billing.catalog.services import catalog_load, catalog_row_delete
from billing.models import Plan, Price, PricingZone
from payments_project.accounts.tests.factories import UserFactory
from payments_project.events.models import DomainEvent

CATALOG: dict[str, Any] = {
    "features": [{"code": "export_pdf", "name": "PDF export"}],
    "plans": [
        {
            "code": "pro",
            "name": "Pro",
            "prices": {"USD": 999, "EUR": 899},
            "features": [{"feature": "export_pdf"}],
        }
    ],
    "zones": [{"code": "eu", "name": "Europe", "currency": "EUR", "countries": ["FR", "DE"]}],
}


def _events() -> list[tuple[str, str, int]]:
    return list(DomainEvent.objects.order_by("id").values_list("type", "aggregate_id", "sequence"))


@pytest.mark.django_db
def test_loading_the_catalog_announces_each_change_once() -> None:
    catalog_load(data=CATALOG)
    catalog_load(data=CATALOG)  # the same again: nothing changed, nothing announced
    catalog_load(data={**CATALOG, "plans": [{**CATALOG["plans"][0], "prices": {"USD": 1099}}]})

    assert _events() == [
        ("catalog.price_changed", "pro", 1),  # USD 999
        ("catalog.price_changed", "pro", 2),  # EUR 899
        ("catalog.plan_changed", "pro", 3),
        ("catalog.zone_changed", "eu", 1),
        ("catalog.price_changed", "pro", 4),  # USD 1099
        ("catalog.price_changed", "pro", 5),  # EUR withdrawn
        ("catalog.plan_changed", "pro", 6),
    ]
    withdrawn = DomainEvent.objects.get(sequence=5, aggregate_id="pro").payload
    assert withdrawn == {"plan": "pro", "currency": "EUR", "amount": 899, "active": False}
    plan = DomainEvent.objects.filter(type="catalog.plan_changed").last().payload
    assert plan["prices"] == [
        {"plan": "pro", "currency": "EUR", "amount": 899, "active": False},
        {"plan": "pro", "currency": "USD", "amount": 1099, "active": True},
    ]


def _inline(prefix: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        data.update({f"{prefix}-{index}-{key}": value for key, value in row.items()})
    return data


@pytest.mark.django_db
def test_a_plan_and_a_zone_saved_in_the_admin_are_announced_by_the_staff_member(client: Client) -> None:
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)

    plan = client.post(
        "/admin/billing/plan/add/",
        {
            "code": "max",
            "name": "Max",
            "interval": "month",
            "interval_count": "1",
            "trial_days": "0",
            "active": "on",
            "sort_order": "0",
            **_inline("plan_features", []),
            **_inline("prices", [{"currency": "USD", "amount": "1999", "active": "on"}]),
        },
    )
    zone = client.post(
        "/admin/billing/pricingzone/add/",
        {
            "code": "jp",
            "name": "Japan",
            "currency": "JPY",
            "multiplier": "1.0",
            "rounding": "exact",
            **_inline("countries", [{"country": "JP"}]),
            **_inline("zone_prices", []),
        },
    )

    assert (plan.status_code, zone.status_code) == (302, 302)
    assert PricingZone.objects.filter(code="jp").exists()
    assert list(
        DomainEvent.objects.order_by("id").values_list("type", "aggregate_id", "actor_type", "actor_id")
    ) == [
        ("catalog.price_changed", "max", "staff", str(staff.pk)),
        ("catalog.plan_changed", "max", "staff", str(staff.pk)),
        ("catalog.zone_changed", "jp", "staff", str(staff.pk)),
    ]
    assert DomainEvent.objects.get(type="catalog.zone_changed").payload["countries"] == ["JP"]


def admin_delete(client: Client, row: Model) -> Any:
    """The admin's delete page for `row`, confirmed."""
    meta = row._meta
    return client.post(f"/admin/{meta.app_label}/{meta.model_name}/{row.pk}/delete/", {"post": "yes"})


def admin_price_delete(client: Client, *, plan: str, currency: str) -> Any:
    """The admin's plan form posted unchanged but for one of its list prices, ticked for deletion."""
    row = Plan.objects.get(code=plan)
    data: dict[str, Any] = {
        "code": row.code,
        "name": row.name,
        "interval": row.interval,
        "interval_count": str(row.interval_count),
        "trial_days": str(row.trial_days),
        "sort_order": str(row.sort_order),
        **({"active": "on"} if row.active else {}),
        **_inline("plan_features", []),
        **_inline("prices", []),
    }
    prices = list(row.prices.order_by("currency"))
    data.update({"prices-TOTAL_FORMS": str(len(prices)), "prices-INITIAL_FORMS": str(len(prices))})
    for index, price in enumerate(prices):
        data.update(
            {
                f"prices-{index}-id": str(price.pk),
                f"prices-{index}-plan": str(row.pk),
                f"prices-{index}-currency": price.currency,
                f"prices-{index}-amount": f"{price.amount / 100:.2f}",  # two-decimal currencies only
                **({f"prices-{index}-active": "on"} if price.active else {}),
                **({f"prices-{index}-DELETE": "on"} if price.currency == currency else {}),
            }
        )
    return client.post(f"/admin/billing/plan/{row.pk}/change/", data)


@pytest.mark.django_db
def test_a_price_a_plan_and_a_zone_deleted_in_the_admin_are_announced_with_their_last_state(
    client: Client,
) -> None:
    catalog_load(data=CATALOG)
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    DomainEvent.objects.all().delete()

    price = admin_price_delete(client, plan="pro", currency="EUR")
    plan = admin_delete(client, Plan.objects.get(code="pro"))
    zone = admin_delete(client, PricingZone.objects.get(code="eu"))

    assert (price.status_code, plan.status_code, zone.status_code) == (302, 302, 302)
    assert not Plan.objects.exists() and not Price.objects.exists() and not PricingZone.objects.exists()
    assert list(
        DomainEvent.objects.order_by("id").values_list(
            "type", "aggregate_id", "sequence", "actor_type", "actor_id"
        )
    ) == [
        ("catalog.price_deleted", "pro", 4, "staff", str(staff.pk)),
        ("catalog.plan_changed", "pro", 5, "staff", str(staff.pk)),
        ("catalog.plan_deleted", "pro", 6, "staff", str(staff.pk)),
        ("catalog.zone_deleted", "eu", 2, "staff", str(staff.pk)),
    ]
    payloads = {e.type: e.payload for e in DomainEvent.objects.all()}
    deleted_price = {"plan": "pro", "currency": "EUR", "amount": 899, "active": True}
    assert payloads["catalog.price_deleted"] == deleted_price
    assert payloads["catalog.plan_deleted"]["prices"] == [
        {"plan": "pro", "currency": "USD", "amount": 999, "active": True}
    ]
    assert payloads["catalog.plan_deleted"]["features"] == [
        {"feature": "export_pdf", "limit": None, "reset_period": "never"}
    ]
    assert payloads["catalog.zone_deleted"]["countries"] == ["DE", "FR"]


@pytest.mark.django_db
def test_a_deletion_that_fails_announces_nothing() -> None:
    catalog_load(data=CATALOG)
    DomainEvent.objects.all().delete()
    zone = PricingZone.objects.get(code="eu")
    staff = UserFactory(is_superuser=True)

    with pytest.raises(RuntimeError), transaction.atomic():
        catalog_row_delete(row=zone, actor=staff)
        raise RuntimeError("rolled back")

    assert PricingZone.objects.filter(code="eu").exists()
    assert DomainEvent.objects.count() == 0
