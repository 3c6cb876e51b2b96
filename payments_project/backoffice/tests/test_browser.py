"""Staff journeys in a real browser: Playwright driving Debian's chromium against a live server.

`.ci/run` installs chromium from Debian's packages (`apt-get install -y chromium`); Playwright's own
browser download (`playwright install`) is never used. Each journey writes a screenshot of its
final page under var/screenshots/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from playwright.sync_api import Page, expect, sync_playwright

from billing.catalog.tests.factories import (
    FeatureFactory,
    MeteredPriceFactory,
    PlanFactory,
    PlanFeatureFactory,
    ZonePriceFactory,
)
from billing.models import Feature, Payment, PlanFeature, Refund, ZonePrice
from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer
from entitlements.tests.factories import EntitlementFactory
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory
from payments_project.backoffice.tests.scenario import staff, usage_and_dunning, world
from subscriptions.dunning.models import DunningCase
from subscriptions.dunning.tests.factories import (
    OPENED_AT,
    DunningAttemptFactory,
    DunningCaseFactory,
    DunningEmailFactory,
)
from subscriptions.models import Subscription
from subscriptions.tests.factories import SubscriptionFactory
from usage.models import UsageAdjustment, UsageCounter
from usage.services import UsageEvent, usage_events_record

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
            # The test's own queries ran while Playwright's event loop ran in this thread, on
            # connections of that context that the test database's teardown never sees: closed
            # here, or the test database cannot be dropped at the end of the run.
            connections.close_all()
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


def _accept_confirmations(page: Page) -> None:
    """The console's action buttons ask "are you sure?"; Playwright would dismiss the dialog."""
    page.on("dialog", lambda dialog: dialog.accept())


@pytest.mark.django_db(transaction=True)
def test_finance_pauses_and_extends_a_dunning_case_from_its_page_and_support_only_reads_it(
    page: Page,
) -> None:
    # given Ada's renewal failed on 1 February 2027: the first retry failed, the second is scheduled
    staff("fin", "finance")
    staff("agent", "support")
    ada = UserFactory(username="ada", email="ada@example.com", first_name="Ada", last_name="Byron")
    subscription = SubscriptionFactory(
        user=ada, plan=PlanFactory(code="pro", name="Pro"), status="past_due", currency="EUR", amount=899
    )
    case = DunningCaseFactory(subscription=subscription, amount_due=899, currency="EUR", failed_retries=1)
    DunningAttemptFactory(
        case=case,
        number=1,
        status="failed",
        due_at=OPENED_AT + timedelta(days=1),
        finished_at=OPENED_AT + timedelta(days=1, minutes=1),
        decline_code="insufficient_funds",
    )
    DunningAttemptFactory(case=case, number=2, due_at=OPENED_AT + timedelta(days=3))
    DunningEmailFactory(
        case=case, to="ada@example.com", subject="Your payment for Pro failed", sent_at=OPENED_AT
    )
    _accept_confirmations(page)
    _log_in(page, "fin")

    # when finance opens the case from the dunning list
    page.goto("/admin/subscriptions/dunningcase/")
    page.locator(f"#result_list a[href='/admin/subscriptions/dunningcase/{case.pk}/change/']").click()

    # then its page shows the customer, the amount in euros and the timeline of attempts and emails
    expect(page.locator(".field-customer")).to_contain_text("ada")
    expect(page.locator(".field-amount")).to_contain_text("€8.99")
    timeline = page.locator(".field-timeline")
    expect(timeline).to_contain_text("2027-02-01 09:00")
    expect(timeline).to_contain_text("email payment_failed")
    expect(timeline).to_contain_text("attempt 1 (Scheduled retry): Failed")
    expect(timeline).to_contain_text("insufficient_funds")
    state = page.locator(".field-state")
    expect(state).to_contain_text("next retry 2027-02-04 09:00 UTC")

    # when they press Pause, then Extend grace by 7 days
    page.locator("#case-actions").get_by_role("button", name="Pause (no retry, no cancellation)").click()
    expect(page.locator(".messagelist")).to_contain_text("Paused: 1 case(s).")
    page.locator("#case-actions").get_by_role("button", name="Extend grace by 7 days").click()

    # then they are back on the case's page, which says so
    expect(page).to_have_url(re.compile(rf"/admin/subscriptions/dunningcase/{case.pk}/change/$"))
    expect(page.locator(".messagelist")).to_contain_text("Cancel day moved 7 days later: 1 case(s).")
    expect(state).to_contain_text("paused: no retry and no cancellation until resumed")
    expect(state).to_contain_text("cancel day 2027-02-22 09:00 UTC (+7 days of grace)")
    expect(page.locator("#case-actions").get_by_role("button", name="Resume")).to_have_count(1)
    _screenshot(page, "finance-dunning-case")
    case.refresh_from_db()
    assert (case.paused, case.grace_days, case.cancel_at) == (True, 7, OPENED_AT + timedelta(days=21))
    assert list(AuditLogEntry.objects.order_by("pk").values_list("action", flat=True)) == [
        "dunning.pause",
        "dunning.extend_grace",
    ]

    # when support opens the same case
    page.context.clear_cookies()
    _log_in(page, "agent")
    page.goto(f"/admin/subscriptions/dunningcase/{case.pk}/change/")

    # then they read it all, with no action button and nothing to save
    expect(page.locator(".field-timeline")).to_contain_text("attempt 1 (Scheduled retry): Failed")
    expect(page.locator(".field-state")).to_contain_text("paused")
    expect(page.locator("#case-actions")).to_have_count(0)
    expect(page.locator("input[name=_save]")).to_have_count(0)
    _screenshot(page, "support-dunning-case")
    assert DunningCase.objects.get(pk=case.pk).paused is True


@pytest.mark.django_db(transaction=True)
def test_finance_corrects_a_customers_usage_counter_and_sees_the_new_value(page: Page) -> None:
    # given Ada, entitled to 1,000 API calls a billing period, who used 120
    staff("fin", "finance")
    ada = UserFactory(username="ada", email="ada@example.com")
    plan = PlanFactory(code="pro", name="Pro")
    api_calls = FeatureFactory(code="api_calls", name="API calls", kind=Feature.Kind.METERED)
    PlanFeatureFactory(plan=plan, feature=api_calls, limit=1000, reset_period="billing_period")
    EntitlementFactory(
        user=ada,
        feature=api_calls,
        plan=plan,
        subscription=SubscriptionFactory(user=ada, plan=plan),
        source="subscription",
        limit=1000,
        reset_period="billing_period",
    )
    usage_events_record(
        events=[UsageEvent(user_id=ada.pk, feature="api_calls", idempotency_key="import-1", quantity=120)]
    )
    counter = UsageCounter.objects.get(subject=f"u{ada.pk}")
    _log_in(page, "fin")

    # when finance finds Ada and opens her usage counters from her page
    page.fill("#bo-global-q", "ada@example.com")
    page.click(".bo-global-search button")
    page.locator("#usage").get_by_role("link", name="open the counters").click()
    row = page.locator("#result_list tbody tr", has_text="api_calls")
    expect(row.locator(".field-used")).to_have_text("120")

    # and records a correction of -20 calls (a double-counted import) through Adjust…
    row.get_by_role("link", name="Adjust…").click()
    expect(page.locator(".field-counter_id")).to_contain_text("api_calls of ada")
    expect(page.locator(".field-counter_id")).to_contain_text("120 used of 1,000")
    page.fill("#id_quantity", "-20")
    page.fill("#id_reason", "double-counted import")
    _screenshot(page, "finance-usage-adjustment-form")
    page.locator("input[name=_save]").click()

    # then they are back on the counter, which shows the new value
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    row = page.locator("#result_list tbody tr", has_text="api_calls")
    expect(row.locator(".field-used")).to_have_text("100")
    _screenshot(page, "finance-usage-adjusted")
    counter.refresh_from_db()
    adjustment = UsageAdjustment.objects.get()
    assert (counter.used, adjustment.quantity, adjustment.reason) == (100, -20, "double-counted import")


@pytest.mark.django_db(transaction=True)
def test_support_reads_a_customers_usage_and_dunning_on_their_page(data: dict[str, Any], page: Page) -> None:
    # given Alice's usage this period and her open and recovered dunning cases
    extra = usage_and_dunning(data)
    _log_in(page, "agent")

    # when support finds her by email
    page.fill("#bo-global-q", "alice@example.com")
    page.click(".bo-global-search button")

    # then her page shows each feature's counter and each case, open first
    usage = page.locator("#usage")
    expect(usage.locator("tbody tr", has_text="api_calls")).to_contain_text("120")
    expect(usage.locator("tbody tr", has_text="api_calls")).to_contain_text("880")
    expect(usage.locator("tbody tr", has_text="projects")).to_contain_text("never")
    dunning = page.locator("#dunning")
    expect(dunning.locator("tbody tr").first).to_contain_text("Past due")
    expect(dunning.locator("tbody tr").first).to_contain_text("€8.99")
    expect(dunning.locator("tbody tr").nth(1)).to_contain_text("Recovered")
    _screenshot(page, "support-customer-usage-dunning")

    # when they open the open case, they land on its read-only page
    dunning.get_by_role("link", name=f"Case #{extra['case'].pk}").click()
    expect(page).to_have_url(re.compile(rf"/admin/subscriptions/dunningcase/{extra['case'].pk}/change/$"))
    expect(page.locator(".field-timeline")).to_contain_text("insufficient_funds")
    expect(page.locator("#case-actions")).to_have_count(0)


@pytest.mark.django_db(transaction=True)
def test_finance_syncs_a_subscription_with_a_price_by_usage_added_to_its_plan(
    data: dict[str, Any], page: Page
) -> None:
    # given Alice's Pro subscription, then API calls priced at €0.01 by usage on Pro
    subscription = Subscription.objects.get(stripe_subscription_id=data["stripe_subscription_id"])
    api_calls = FeatureFactory(
        code="api_calls", name="API calls", kind=Feature.Kind.METERED, meter_event_name="api_calls"
    )
    plan_feature = PlanFeatureFactory(plan=data["pro"], feature=api_calls)
    MeteredPriceFactory(plan_feature=plan_feature, zone=data["eurozone"], unit_amount=1)
    _accept_confirmations(page)
    _log_in(page, "fin")

    # when finance opens her subscription and presses "Sync metered items with the plan"
    page.goto(f"/admin/subscriptions/subscription/{subscription.pk}/change/")
    actions = page.locator("#subscription-actions")
    actions.get_by_role("button", name="Sync metered items with the plan").click()

    # then the console says it changed Stripe's items, and Stripe bills API calls by usage
    messages = page.locator(".messagelist")
    expect(messages).to_contain_text("Metered items checked: 1 subscription(s).")
    expect(messages).to_contain_text("Stripe items changed: 1 subscription(s).")
    _screenshot(page, "finance-metered-items-synced")
    remote = stripe_gateway.client().v1.subscriptions.retrieve(data["stripe_subscription_id"])
    usage_types = sorted(item.price.recurring.usage_type for item in remote["items"].data)
    assert usage_types == ["licensed", "metered"]
    assert subscription.history.filter(staff_user__username="fin").values_list("note", flat=True)[0] == (
        "metered items synced with plan pro: 1 added, 0 removed"
    )
