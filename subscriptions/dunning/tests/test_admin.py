"""The dunning admin: audited actions by role, the policy form's validation and timeline preview."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from payments_project.accounts.models import AuditLogEntry
from payments_project.backoffice.tests.scenario import staff
from subscriptions.dunning.models import DunningCase, DunningPolicy
from subscriptions.dunning.tests.factories import (
    DunningAttemptFactory,
    DunningCaseFactory,
    DunningEmailFactory,
)

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/subscriptions/dunningcase/"


def _login(role: str | None) -> Client:
    client = Client()
    client.force_login(staff(f"user-{role}", role))
    return client


def test_finance_pauses_extends_and_resolves_a_case_each_audited() -> None:
    case = DunningCaseFactory()
    client = _login("finance")
    for action in ("pause_action", "extend_grace_action", "resolve_action"):
        response = client.post(CHANGELIST, {"action": action, "_selected_action": [case.pk]})
        assert response.status_code == 302
    case.refresh_from_db()
    assert (case.paused, case.grace_days, case.stage) == (True, 7, "stopped")
    assert list(AuditLogEntry.objects.order_by("pk").values_list("action", flat=True)) == [
        "dunning.pause",
        "dunning.extend_grace",
        "dunning.resolved",
    ]


def test_support_cannot_run_the_actions() -> None:
    case = DunningCaseFactory()
    response = _login("support").post(CHANGELIST, {"action": "pause_action", "_selected_action": [case.pk]})
    assert response.status_code in (200, 302, 403)
    assert DunningCase.objects.get(pk=case.pk).paused is False
    assert AuditLogEntry.objects.count() == 0


def test_the_case_page_shows_the_timeline_with_codes_and_emails() -> None:
    case = DunningCaseFactory()
    DunningAttemptFactory(
        case=case, number=1, status="failed", decline_code="insufficient_funds", advice_code="try_again_later"
    )
    DunningEmailFactory(case=case, step="retry_failed:1", subject="We could not charge your card")
    page = _login("support").get(f"{CHANGELIST}{case.pk}/change/").content.decode()
    assert "attempt 1 (Scheduled retry): Failed" in page
    assert "insufficient_funds/try_again_later" in page
    assert "email retry_failed:1 (not sent yet)" in page


def test_the_stage_and_plan_filters_answer() -> None:
    past_due, suspended = DunningCaseFactory(), DunningCaseFactory(stage="suspended")
    client = _login("support")
    page = client.get(CHANGELIST, {"stage": "suspended"}).content.decode()
    assert f"{CHANGELIST}{suspended.pk}/change/" in page
    assert f"{CHANGELIST}{past_due.pk}/change/" not in page
    by_plan = client.get(CHANGELIST, {"subscription__plan__id__exact": past_due.subscription.plan_id})
    assert f"{CHANGELIST}{past_due.pk}/change/" in by_plan.content.decode()


def test_the_policy_page_previews_the_timeline_and_refuses_a_bad_policy(dunning_seeded: None) -> None:
    default = DunningPolicy.objects.get(is_default=True)
    client = _login("finance")
    page = client.get(f"/admin/subscriptions/dunningpolicy/{default.pk}/change/").content.decode()
    assert "retry 3 fails: suspended" in page
    assert "cancelled in Stripe, invoice voided" in page
    response = client.post(
        f"/admin/subscriptions/dunningpolicy/{default.pk}/change/",
        {
            "name": "Default",
            "retry_offsets_days": "[1, 3, 45]",
            "past_due_access": "full",
            "past_due_features": "[]",
            "suspend_after_failed_retries": "2",
            "cancel_after_days": "14",
            "invoice_end": "void",
        },
    )
    assert response.status_code == 200
    assert "is past the billing interval (28 days)" in response.content.decode()
    assert DunningPolicy.objects.get(pk=default.pk).retry_offsets_days == [1, 3, 5, 7]


def test_the_case_page_offers_finance_the_actions_that_apply_and_support_none() -> None:
    # given an open case, a paused one and a recovered one
    open_case, paused = DunningCaseFactory(), DunningCaseFactory(paused=True)
    closed = DunningCaseFactory(stage="recovered")
    finance, support = _login("finance"), _login("support")

    def buttons(client: Client, case: DunningCase) -> list[str]:
        page = client.get(f"{CHANGELIST}{case.pk}/change/").content.decode()
        return re.findall(r'name="action" value="(\w+)"', page)

    # then finance has the buttons that apply to each; support has none
    assert buttons(finance, open_case) == [
        "retry_now_action",
        "pause_action",
        "extend_grace_action",
        "resolve_action",
    ]
    assert buttons(finance, paused) == [
        "retry_now_action",
        "resume_action",
        "extend_grace_action",
        "resolve_action",
    ]
    assert buttons(finance, closed) == []
    assert buttons(support, open_case) == []


def test_a_button_on_the_case_page_runs_the_action_and_returns_to_the_case() -> None:
    case = DunningCaseFactory()
    response = _login("finance").post(
        CHANGELIST,
        {"action": "pause_action", "_selected_action": [case.pk], "index": "0", "_case_page": "1"},
    )
    assert (response.status_code, response["Location"]) == (302, f"{CHANGELIST}{case.pk}/change/")
    assert DunningCase.objects.get(pk=case.pk).paused is True


def test_the_case_page_shows_amounts_in_the_currency_and_stripe_ids_as_links() -> None:
    case = DunningCaseFactory(amount_due=14800, currency="JPY", stage="recovered", recovered_amount=14800)
    page = _login("support").get(f"{CHANGELIST}{case.pk}/change/").content.decode()
    assert page.count("¥14,800") == 2  # amount due and recovered
    assert f'href="/admin/djstripe/invoice/?q={case.stripe_invoice_id}"' in page
    assert f'href="/admin/djstripe/customer/?q={case.stripe_customer_id}"' in page


def test_a_customers_cases_are_listed_by_user_id() -> None:
    mine = DunningCaseFactory()
    DunningCaseFactory()  # another customer's
    response = _login("support").get(CHANGELIST, {"subscription__user__id__exact": mine.subscription.user_id})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [mine]
