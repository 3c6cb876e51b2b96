"""The caller never picks the price: a customer's pricing country comes from the trusted proxy
header at their first purchase and stays (docs/pricing-trust.md)."""

from typing import Any

import pytest

from billing.catalog.models import CustomerPricing
from billing.catalog.services import customer_pricing_card_check, customer_pricing_override
from billing.catalog.tests.factories import (
    CustomerPricingFactory,
    PlanFactory,
    PriceFactory,
    PricingZoneFactory,
    ZoneCountryFactory,
    ZonePriceFactory,
)
from devtools.testing import StandinServer
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.helpers import token_client

URLS = {"success_url": "https://x.test/ok", "cancel_url": "https://x.test/no"}


@pytest.fixture
def zones(settings) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Pro at 9.99 USD in the US (the default zone), 4.99 USD in Latin America (Brazil)."""
    settings.PRICING_COUNTRY_HEADER = "CF-IPCountry"
    pro = PlanFactory(code="pro")
    PriceFactory(plan=pro, currency="USD", amount=999)
    us = PricingZoneFactory(code="us", currency="USD", is_default=True)
    ZoneCountryFactory(zone=us, country="US")
    latam = PricingZoneFactory(code="latam", currency="USD")
    ZoneCountryFactory(zone=latam, country="BR")
    ZonePriceFactory(zone=latam, plan=pro, amount=499)
    one_time = PlanFactory(code="ebook", interval="one_time")
    PriceFactory(plan=one_time, currency="USD", amount=1500)
    ZonePriceFactory(zone=latam, plan=one_time, amount=700)
    return {"us": us, "latam": latam}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"zone": "latam"}, {}),
        ({"country": "BR"}, {}),
        ({"country": "br"}, {"HTTP_CF_IPCOUNTRY": "BR"}),  # a later trip abroad changes nothing
    ],
    ids=["zone", "country", "country and header"],
)
def test_a_request_naming_another_zone_or_country_gets_the_customers_own_price(
    stripe_standin: StandinServer, zones: dict[str, Any], body: dict[str, str], headers: dict[str, str]
) -> None:
    # given a customer priced for the US at their first purchase
    customer = CustomerPricingFactory(country="US").user

    # when they ask for a checkout naming Latin America
    response = token_client(customer).post(
        "/api/v1/checkout-sessions/", {"plan": "pro", **body, **URLS}, format="json", **headers
    )

    # then the session charges the US price
    assert response.status_code == 201, response.content
    assert (response.json()["amount"], response.json()["zone"]) == (999, "us")


@pytest.mark.django_db
def test_the_first_purchase_fixes_the_country_the_trusted_header_names(
    stripe_standin: StandinServer, zones: dict[str, Any]
) -> None:
    customer = UserFactory()

    # when a customer coming through the proxy from Brazil buys for the first time
    first = token_client(customer).post(
        "/api/v1/checkout-sessions/", {"plan": "pro", **URLS}, format="json", HTTP_CF_IPCOUNTRY="BR"
    )

    # then Brazil is their pricing country, and their price is Latin America's
    assert (first.status_code, first.json()["amount"], first.json()["zone"]) == (201, 499, "latam")
    pricing = CustomerPricing.objects.get(user=customer)
    assert (pricing.country, pricing.source) == ("BR", "proxy_header")


@pytest.mark.django_db
def test_the_header_is_not_trusted_unless_configured(
    stripe_standin: StandinServer, zones: dict[str, Any], settings
) -> None:  # type: ignore[no-untyped-def]
    # given no trusted proxy configured: the header is the client's word
    settings.PRICING_COUNTRY_HEADER = ""
    customer = UserFactory()

    response = token_client(customer).post(
        "/api/v1/checkout-sessions/", {"plan": "pro", **URLS}, format="json", HTTP_CF_IPCOUNTRY="BR"
    )

    # then the default zone's price, and no country fixed
    assert (response.json()["amount"], response.json()["zone"]) == (999, "us")
    assert CustomerPricing.objects.get(user=customer).country == ""


@pytest.mark.django_db
def test_a_one_time_plan_at_another_zones_price_is_refused(
    stripe_standin: StandinServer, zones: dict[str, Any]
) -> None:
    customer = CustomerPricingFactory(country="US").user

    # when a US customer pays the Latin American price, naming Brazil
    response = token_client(customer).post(
        "/api/v1/payments/",
        {
            "amount": 700,
            "currency": "USD",
            "plan": "ebook",
            "country": "BR",
            "payment_method": "pm_card_visa",
        },
        format="json",
    )

    # then it is refused with the price of their own zone
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "price_mismatch"
    assert response.json()["error"]["fields"]["amount"][0]["message"] == "1500 USD"


@pytest.mark.django_db
def test_the_plans_a_customer_sees_are_priced_in_their_own_zone(zones: dict[str, Any]) -> None:
    customer = CustomerPricingFactory(country="US").user

    response = token_client(customer).get("/api/v1/plans/pro/?country=BR")

    assert (response.json()["price"]["amount"], response.json()["zone"]["code"]) == (999, "us")


@pytest.mark.django_db
def test_a_card_from_another_country_is_flagged_for_support() -> None:
    pricing = CustomerPricingFactory(country="BR")

    # when a card issued in the US pays, then another from Brazil
    flagged = customer_pricing_card_check(user_id=pricing.user_id, card_country="us")
    again = customer_pricing_card_check(user_id=pricing.user_id, card_country="BR")

    # then the mismatch is flagged, and stays until staff look at it
    pricing.refresh_from_db()
    assert (flagged, again) == (True, False)
    assert (pricing.card_country, pricing.card_mismatch) == ("BR", True)


@pytest.mark.django_db
def test_staff_override_the_pricing_country_audited() -> None:
    pricing = CustomerPricingFactory(country="BR", card_country="US", card_mismatch=True)
    staff = UserFactory(is_staff=True)

    customer_pricing_override(pricing=pricing, country="us", staff_user=staff, reason="lives in Ohio")

    pricing.refresh_from_db()
    assert (pricing.country, pricing.source, pricing.card_mismatch) == ("US", "staff", False)
    entry = AuditLogEntry.objects.get()
    assert (entry.actor_id, entry.action, entry.subject_user_id, entry.reason, entry.data) == (
        staff.pk,
        "pricing_country_override",
        pricing.user_id,
        "lives in Ohio",
        {"from": "BR", "to": "US"},
    )


@pytest.mark.django_db
def test_finance_changes_a_pricing_country_in_the_admin_audited(client) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Group

    pricing = CustomerPricingFactory(country="BR", card_country="US", card_mismatch=True)
    finance = UserFactory(is_staff=True)
    finance.groups.add(Group.objects.get(name="finance"))
    client.force_login(finance)

    response = client.post(
        f"/admin/billing/customerpricing/{pricing.pk}/change/",
        {"country": "us", "reason": "card and address in US"},
    )

    assert response.status_code == 302
    pricing.refresh_from_db()
    assert (pricing.country, pricing.source, pricing.card_mismatch) == ("US", "staff", False)
    entry = AuditLogEntry.objects.get(action="pricing_country_override")
    assert (entry.actor_id, entry.reason) == (finance.pk, "card and address in US")


@pytest.mark.django_db
def test_support_reads_pricing_countries_but_cannot_change_them(client) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Group

    pricing = CustomerPricingFactory(country="BR")
    support = UserFactory(is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    client.force_login(support)

    assert client.get("/admin/billing/customerpricing/?card_mismatch__exact=1").status_code == 200
    response = client.post(
        f"/admin/billing/customerpricing/{pricing.pk}/change/", {"country": "US", "reason": "x"}
    )
    assert response.status_code == 403
    pricing.refresh_from_db()
    assert pricing.country == "BR"
