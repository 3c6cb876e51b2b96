"""The customer page and the global search: support finds a customer by anything they have at
hand and sees everything about them on one page, every related object one click away."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from billing.models import Payment
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory
from payments_project.backoffice.tests.scenario import usage_and_dunning
from subscriptions.models import Subscription


def _as(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _section(page: str, section: str) -> str:
    found = re.search(rf'<section class="module bo-section" id="{section}">.*?</section>', page, re.S)
    assert found is not None, section
    return re.sub(r"\s+", " ", found.group(0))


def _page(data: dict[str, Any], user: Any, query: str = "") -> str:
    response = _as(user).get(f"/admin/accounts/customer/{data['alice'].pk}/change/{query}")
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
def test_anything_support_has_at_hand_finds_the_customer(data: dict[str, Any]) -> None:
    # given the ids Stripe and our rows know Alice by (and an address that contains hers)
    alice = data["alice"]
    UserFactory(username="malice", email="malice@example.com")
    subscription = Subscription.objects.get(user=alice)
    charge = Payment.objects.get(user=alice, kind="subscription")
    one_time = data["payment"]
    keys = {
        "email": "alice@example.com",
        "email in capitals": "ALICE@example.com",
        "name": "Alice Martin",
        "user id": str(alice.pk),
        "customer": one_time.stripe_customer_id,
        "subscription": subscription.stripe_subscription_id,
        "payment intent": one_time.stripe_payment_intent_id,
        "charge": charge.stripe_charge_id,
        "invoice": charge.stripe_invoice_id,
        "event": data["events"][0]["id"],
    }
    support = _as(data["support"])

    # when support types each in the search box, then each opens Alice's page at once
    landed = {
        what: support.get("/admin/accounts/customer/", {"q": key}).get("Location")
        for what, key in keys.items()
    }
    assert landed == dict.fromkeys(keys, f"/admin/accounts/customer/{alice.pk}/change/")


@pytest.mark.django_db
def test_a_customer_without_a_subscription_is_found_and_says_so(data: dict[str, Any]) -> None:
    support = _as(data["support"])
    found = support.get("/admin/accounts/customer/", {"q": "bob@example.com"})
    page = support.get(found["Location"]).content.decode()
    assert found.status_code == 302
    assert "No subscription: this customer exists but never subscribed." in page


@pytest.mark.django_db
def test_a_search_that_matches_nobody_or_several_lists_them(data: dict[str, Any]) -> None:
    support = _as(data["support"])
    nobody = support.get("/admin/accounts/customer/", {"q": "cus_doesnotexist"})
    several = support.get("/admin/accounts/customer/", {"q": "example.com"})
    assert (nobody.status_code, list(nobody.context["cl"].result_list)) == (200, [])
    assert "0 customers" in nobody.content.decode()
    assert several.status_code == 200
    assert {u.username for u in several.context["cl"].result_list} >= {"alice", "bob"}


@pytest.mark.django_db
def test_the_customer_page_shows_everything_about_the_customer(data: dict[str, Any]) -> None:
    page = _page(data, data["support"])

    # profile
    assert "alice@example.com" in page and "Alice Martin" in page
    # the subscription, its price in the currency's format, its timeline
    assert "€8.99 / month" in page
    assert "incomplete → <strong>active</strong>" in page or "→ <strong>active</strong>" in page
    # every payment with its refunds: the one-time payment and the subscription's charge
    assert "partially refunded €7.50 of €15.00" in page
    assert "Subscription charge" in page and "One-time payment" in page
    # entitlements with their source, the family, Stripe events, staff actions
    assert "export_pdf" in page and "subscription <a" in page
    assert "The Martins" in page and "bob" in page
    assert "invoice.payment_succeeded" in page
    assert "refund.create" in page


@pytest.mark.django_db
def test_support_reads_the_page_without_the_refund_button_finance_has_it(data: dict[str, Any]) -> None:
    refund_url = f"/admin/billing/payment/{data['payment'].pk}/refund/"
    assert refund_url not in _page(data, data["support"])
    assert refund_url in _page(data, data["finance"])


@pytest.mark.django_db
def test_every_related_object_is_one_click_away_and_opens_for_support(data: dict[str, Any]) -> None:
    # given the page as support sees it
    page = _page(data, data["support"])
    links = set(re.findall(r'href="(/admin/[^"#]+)"', page))

    # then it links to each kind of object, and every link opens for support
    for kind in [
        "/admin/subscriptions/subscription/",
        "/admin/billing/payment/",
        "/admin/billing/refund/",
        "/admin/entitlements/entitlement/",
        "/admin/subscriptions/family/",
        "/admin/billing/stripeevent/",
        "/admin/accounts/auditlogentry/",
        "/admin/djstripe/customer/",
        "/admin/billing/plan/",
    ]:
        assert any(link.startswith(kind) and "/change/" in link for link in links), kind
    support = _as(data["support"])
    broken = {
        link: code
        for link in sorted(links)
        if (code := support.get(link.replace("&amp;", "&")).status_code) != 200
    }
    assert broken == {}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("feature", "shown"),
    [
        ("export_pdf", "allowed</span>\n      <strong>export_pdf</strong>: granted"),
        ("nope", "unknown_feature"),
    ],
)
def test_support_runs_an_entitlement_check_from_the_page_and_nothing_changes(
    data: dict[str, Any], feature: str, shown: str
) -> None:
    audit_before = AuditLogEntry.objects.count()
    page = _page(data, data["support"], f"?feature={feature}")
    assert shown in page
    assert AuditLogEntry.objects.count() == audit_before


@pytest.mark.django_db
def test_only_staff_who_may_view_customers_open_the_page(data: dict[str, Any]) -> None:
    url = f"/admin/accounts/customer/{data['alice'].pk}/change/"
    assert _as(data["bob"]).get(url).status_code == 302  # a customer is sent to the staff login
    assert _as(data["support"]).get("/admin/accounts/customer/999999/change/").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["support", "finance"])
def test_the_page_shows_this_periods_usage_per_feature_linked_to_the_lists(
    data: dict[str, Any], role: str
) -> None:
    # given Alice used 3 of 50 projects (a standing limit) and 120 of 1,000 API calls this period
    extra = usage_and_dunning(data)
    alice, subscription = data["alice"], extra["subscription"]
    start, end = subscription.current_period_start, subscription.current_period_end

    # when staff open her page
    usage = _section(_page(data, data[role]), "usage")

    # then each feature's counter shows used, limit, remaining and when it resets
    counters = f"/admin/usage/usagecounter/?subject__exact=u{alice.pk}&amp;feature_code__exact="
    assert (
        f'<td><a href="{counters}api_calls">api_calls</a></td> <td>this customer</td>'
        ' <td class="bo-num">120</td> <td class="bo-num">1,000</td> <td class="bo-num">880</td>'
        ' <td class="bo-num">0</td> <td>Hard: refuse at the limit</td>'
        f' <td class="bo-nowrap">{start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M}</td>'
        f' <td class="bo-nowrap">{end:%Y-%m-%d %H:%M}</td>'
    ) in usage
    assert (
        f'<td><a href="{counters}projects">projects</a></td> <td>this customer</td>'
        ' <td class="bo-num">3</td> <td class="bo-num">50</td> <td class="bo-num">47</td>'
    ) in usage
    assert '<td class="bo-nowrap">never</td>' in usage
    # and the section opens the customer's counters (own and family pool) and records
    family = data["family"].pk
    assert f'href="/admin/usage/usagecounter/?subject__in=u{alice.pk},f{family}"' in usage
    assert f'href="/admin/usage/usagerecord/?user__id__exact={alice.pk}"' in usage


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["support", "finance"])
def test_the_page_shows_dunning_cases_open_first_linked_to_each_case(data: dict[str, Any], role: str) -> None:
    # given Alice's open case (one retry failed, the next due on 4 March) and a recovered one
    extra = usage_and_dunning(data)
    case, recovered = extra["case"], extra["recovered_case"]

    # when staff open her page
    dunning = _section(_page(data, data[role]), "dunning")

    # then the open case comes first with its stage, amount, attempts, next retry and cancel day
    open_row = dunning.index(f"/admin/subscriptions/dunningcase/{case.pk}/change/")
    closed_row = dunning.index(f"/admin/subscriptions/dunningcase/{recovered.pk}/change/")
    assert open_row < closed_row
    assert (
        '<td><span class="bo-badge bo-warn">Past due</span></td> <td class="bo-num">€8.99</td>'
        ' <td class="bo-nowrap">2027-03-01 09:00</td>'
        ' <td class="bo-num">1 of 2<div class="help">1 failed</div></td>'
        ' <td class="bo-nowrap">2027-03-04 09:00</td> <td class="bo-nowrap">2027-03-15 09:00</td>'
    ) in dunning
    # and the recovered case says when it closed, with no retry or cancel day
    assert (
        '<span class="bo-badge bo-ok">Recovered</span><div class="help">closed 2027-01-02 09:00: paid</div>'
    ) in dunning
    assert (
        f'href="/admin/subscriptions/dunningcase/?subscription__user__id__exact={data["alice"].pk}"'
        in dunning
    )


@pytest.mark.django_db
def test_the_usage_and_dunning_links_open_for_support(data: dict[str, Any]) -> None:
    # given the page's usage and dunning sections as support sees them
    usage_and_dunning(data)
    page = _page(data, data["support"])
    sections = _section(page, "usage") + _section(page, "dunning")
    links = {link.replace("&amp;", "&") for link in re.findall(r'href="(/admin/[^"#]+)"', sections)}

    # then every link opens, and each filtered list shows Alice's rows only
    support = _as(data["support"])
    answers = {link: support.get(link) for link in sorted(links)}
    assert {link: r.status_code for link, r in answers.items() if r.status_code != 200} == {}
    counters = answers[f"/admin/usage/usagecounter/?subject__in=u{data['alice'].pk},f{data['family'].pk}"]
    cases = answers[f"/admin/subscriptions/dunningcase/?subscription__user__id__exact={data['alice'].pk}"]
    assert sorted(c.feature_code for c in counters.context["cl"].result_list) == ["api_calls", "projects"]
    assert len(cases.context["cl"].result_list) == 2


@pytest.mark.django_db
def test_a_customer_without_usage_or_dunning_says_so(data: dict[str, Any]) -> None:
    page = _as(data["support"]).get(f"/admin/accounts/customer/{data['bob'].pk}/change/").content.decode()
    assert "No metered or limited feature in this customer's entitlements." in page
    assert "No dunning case: no renewal of this customer has failed." in page
