"""The staff console: every page renders, and roles decide who may act."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import Client

from payments_project.accounts.tests.factories import UserFactory
from subscriptions.models import Subscription
from subscriptions.tests.factories import SubscriptionFactory


@pytest.mark.django_db
def test_every_changelist_renders_for_a_superuser(client: Client) -> None:
    # given some data in each app and a superuser
    SubscriptionFactory()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))

    # when every registered model's list page is opened, then it renders
    failures = []
    for model in admin.site._registry:
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        status = client.get(url).status_code
        if status != 200:
            failures.append((url, status))
    assert failures == []


@pytest.mark.django_db
def test_the_subscription_page_links_to_the_customer_payments_and_entitlements(client: Client) -> None:
    subscription = SubscriptionFactory()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    page = client.get(f"/admin/subscriptions/subscription/{subscription.pk}/change/").content.decode()
    assert f"/admin/accounts/customer/{subscription.user_id}/change/" in page
    assert f"/admin/billing/payment/?user__id__exact={subscription.user_id}" in page
    assert f"/admin/entitlements/entitlement/?subscription__id__exact={subscription.pk}" in page


@pytest.mark.django_db
def test_support_sees_subscriptions_but_cannot_run_their_actions(client: Client) -> None:
    # given a support agent (view-only) and an active subscription
    support = UserFactory(username="agent", is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    subscription = SubscriptionFactory(status="active")
    client.force_login(support)

    # when they try to cancel it from the list page
    listing = client.get("/admin/subscriptions/subscription/")
    client.post(
        "/admin/subscriptions/subscription/",
        {"action": "cancel_now_action", "_selected_action": [subscription.pk]},
    )

    # then the list renders without the action, and nothing changed
    assert listing.status_code == 200
    assert "cancel_now_action" not in listing.content.decode()
    assert Subscription.objects.get(pk=subscription.pk).status == "active"


@pytest.mark.django_db
def test_finance_is_offered_the_actions(client: Client) -> None:
    finance = UserFactory(username="fin", is_staff=True)
    finance.groups.add(Group.objects.get(name="finance"))
    SubscriptionFactory()
    client.force_login(finance)
    page = client.get("/admin/subscriptions/subscription/").content.decode()
    assert "cancel_now_action" in page
    assert "extend_action" in page
