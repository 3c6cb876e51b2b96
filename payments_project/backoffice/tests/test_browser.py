"""Staff journeys in a real browser: Playwright driving Debian's chromium against a live server.

`.ci/run` installs chromium from Debian's packages (`apt-get install -y chromium`); Playwright's own
browser download (`playwright install`) is never used. Each journey writes a screenshot of its
final page under var/screenshots/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, expect, sync_playwright

from billing.catalog.tests.factories import ZonePriceFactory
from billing.models import Payment, PlanFeature, Refund, ZonePrice
from devtools.testing import StandinServer
from payments_project.backoffice.tests.scenario import world

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct-horse-battery"  # UserFactory's


def _screenshot(page: Page, name: str) -> Path:
    folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def page(live_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`)")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # synchronous all the same (the server answers from its own thread).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 1000})
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        try:
            yield tab
        finally:
            browser.close()


@pytest.fixture
def data(stripe_standin: StandinServer) -> dict[str, Any]:
    return world(Client(), stripe_standin, None)


def _log_in(page: Page, username: str) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("Payments back-office")


@pytest.mark.django_db(transaction=True)
def test_support_finds_a_customer_by_email_and_reaches_their_payments_in_three_clicks(
    data: dict[str, Any], page: Page
) -> None:
    # given support on the console's home page
    alice, payment = data["alice"], data["payment"]
    _log_in(page, "agent")
    clicks = 0

    # when they type the customer's email in the search box and press Find
    page.fill("#bo-global-q", "alice@example.com")
    page.click(".bo-global-search button")
    clicks += 1

    # then the customer's page lists their payments, with refunds and what is left
    expect(page).to_have_url(re.compile(rf"/admin/accounts/customer/{alice.pk}/change/$"))
    payments = page.locator("#payments")
    expect(payments).to_contain_text("partially refunded €7.50 of €15.00")
    expect(payments).to_contain_text("Subscription charge")
    expect(payments.get_by_role("link", name="Refund…")).to_have_count(0)  # support cannot refund
    _screenshot(page, "support-customer-page")

    # when they open the one-time payment
    payments.get_by_role("link", name=f"#{payment.pk}", exact=True).click()
    clicks += 1

    # then its page says what was refunded and what is left, without actions support cannot take
    expect(page).to_have_url(re.compile(rf"/admin/billing/payment/{payment.pk}/change/$"))
    expect(page.locator("#content")).to_contain_text("partially refunded €7.50 of €15.00")
    expect(page.locator("#content")).to_contain_text("€7.50")
    expect(page.get_by_text("Refund…")).to_have_count(0)
    expect(page.locator("input[name=_save]")).to_have_count(0)
    assert clicks <= 3
    _screenshot(page, "support-payment-page")


@pytest.mark.django_db(transaction=True)
def test_finance_refunds_part_of_a_subscription_charge_typed_in_real_units(
    data: dict[str, Any], page: Page
) -> None:
    # given finance, and Alice's 8.99 EUR subscription charge
    charge = Payment.objects.get(user=data["alice"], kind=Payment.Kind.SUBSCRIPTION)
    _log_in(page, "fin")
    page.fill("#bo-global-q", "alice@example.com")
    page.click(".bo-global-search button")

    # when they press Refund… on the charge, type 2.50 and confirm
    page.locator(f"a[href='/admin/billing/payment/{charge.pk}/refund/']").click()
    page.fill("#id_amount", "2.50")
    page.select_option("#id_reason", "requested_by_customer")
    page.fill("#id_note", "one day of outage")
    page.get_by_role("button", name="Refund through Stripe").click()

    # then the charge's page says so, and one 2.50 EUR refund went to Stripe
    expect(page).to_have_url(re.compile(rf"/admin/billing/payment/{charge.pk}/change/$"))
    expect(page.locator(".messagelist")).to_contain_text("Refunded €2.50.")
    expect(page.locator("#content")).to_contain_text("partially refunded €2.50 of €8.99")
    _screenshot(page, "finance-refund-subscription-charge")
    assert list(Refund.objects.filter(payment=charge).values_list("amount", "currency", "status")) == [
        (250, "EUR", "succeeded")
    ]


@pytest.mark.django_db(transaction=True)
def test_finance_edits_a_feature_limit_and_a_zone_price_and_the_plans_api_shows_them(
    data: dict[str, Any], page: Page
) -> None:
    # given Pro with a 50-project limit and an explicit 8.99 EUR price in the Eurozone
    pro, eurozone = data["pro"], data["eurozone"]
    ZonePriceFactory(zone=eurozone, plan=pro, amount=899)
    _log_in(page, "fin")

    # when finance sets the limit to 75 on the plan's page
    page.goto(f"/admin/billing/plan/{pro.pk}/change/")
    row = page.locator("tr.form-row", has=page.locator("option[selected]", has_text="projects"))
    row.locator("input[name$='-limit']").fill("75")
    page.locator("input[name=_save]").click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")

    # and types the Eurozone's price as 7.99
    page.goto(f"/admin/billing/pricingzone/{eurozone.pk}/change/")
    page.fill("input[name='zone_prices-0-amount']", "7.99")
    page.locator("input[name=_continue]").click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    expect(page.locator("input[name='zone_prices-0-amount']")).to_have_value("7.99")
    _screenshot(page, "finance-zone-price")

    # then the public plans API shows both
    answer = page.request.get("/api/v1/plans/pro/?country=FR")
    plan = json.loads(answer.text())
    limits = {f["code"]: f["limit"] for f in plan["features"]}
    assert (plan["price"]["amount"], plan["price"]["display"], limits["projects"]) == (799, "€7.99", 75)
    page.goto("/api/v1/plans/pro/?country=FR&format=json")
    _screenshot(page, "finance-plans-api")
    assert PlanFeature.objects.get(plan=pro, feature__code="projects").limit == 75
    assert ZonePrice.objects.get(zone=eurozone, plan=pro).amount == 799
