"""Each role is shown only what it may do: no buttons that lead to a refusal, no Save on read-only
pages, no delete on records for anyone; a refusal is a page in the console's style."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.test import Client

from billing.models import Payment, Refund, StripeEvent, StripePrice
from entitlements.models import Entitlement
from payments_project.accounts.models import AuditLogEntry
from subscriptions.models import Subscription

# Records of what happened, and money: nobody deletes them, superusers included.
NEVER_DELETED = [AuditLogEntry, StripeEvent, Payment, Refund, StripePrice, Subscription, Entitlement]


def _as(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_a_refusal_is_a_styled_page_that_says_why(data: dict[str, Any]) -> None:
    support = _as(data["support"])
    for url in [f"/admin/billing/payment/{data['payment'].pk}/refund/", "/admin/billing/plan/add/"]:
        response = support.get(url)
        page = response.content.decode()
        assert response.status_code == 403
        assert "Your role does not allow this." in page
        assert "You are signed in as <strong>agent</strong> (support)." in page
        assert "admin/css/base.css" in page  # the console's own look, not a bare "403 Forbidden"


@pytest.mark.django_db
def test_the_api_still_refuses_in_its_json_format(data: dict[str, Any]) -> None:
    response = _as(data["support"]).post(
        f"/api/v1/payments/{data['payment'].pk}/status/",
        {"status": "failed", "reason": "test"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.django_db
@pytest.mark.parametrize("model", NEVER_DELETED, ids=lambda m: m._meta.label)
def test_nobody_deletes_records_or_money_rows(model: Any, data: dict[str, Any]) -> None:
    root = _as(data["root"])
    obj = model.objects.first()
    base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    assert "delete_selected" not in root.get(base).content.decode()
    assert root.get(f"{base}{obj.pk}/delete/").status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


@pytest.mark.django_db
def test_the_subscription_page_is_read_only_with_finances_actions_as_buttons(data: dict[str, Any]) -> None:
    # given Alice's subscription, as finance and support see its page
    subscription = Subscription.objects.get(user=data["alice"])
    url = f"/admin/subscriptions/subscription/{subscription.pk}/change/"
    finance_page = _as(data["finance"]).get(url).content.decode()
    support_page = _as(data["support"]).get(url).content.decode()

    # then neither may save or delete it; finance has the actions as buttons, support has none
    for page in (finance_page, support_page):
        assert 'name="_save"' not in page and "/delete/" not in page
        assert "€8.99 a month" in page
    assert 'value="cancel_at_period_end_action"' in finance_page
    assert 'id="subscription-actions"' not in support_page

    # when finance presses "Cancel at period end"
    response = _as(data["finance"]).post(
        "/admin/subscriptions/subscription/",
        {"action": "cancel_at_period_end_action", "_selected_action": subscription.pk, "index": 0},
    )

    # then it went through the service (Stripe first, then our row)
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.cancel_at_period_end is True


@pytest.mark.django_db
def test_support_is_offered_no_refund_anywhere(data: dict[str, Any]) -> None:
    support = _as(data["support"])
    listing = support.get("/admin/billing/payment/").content.decode()
    page = support.get(f"/admin/billing/payment/{data['payment'].pk}/change/").content.decode()
    assert "refund_selected" not in listing
    assert "Refund…" not in page and f"/admin/billing/payment/{data['payment'].pk}/refund/" not in page
    finance_page = _as(data["finance"]).get(f"/admin/billing/payment/{data['payment'].pk}/change/")
    assert "Refund…" in finance_page.content.decode()


def test_the_never_deleted_models_are_all_registered() -> None:
    assert all(model in admin.site._registry for model in NEVER_DELETED)
