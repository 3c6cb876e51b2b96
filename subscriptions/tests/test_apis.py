"""Customer operations through the API and the services, against the Stripe stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe
from django.contrib.auth.models import Group
from django.test import override_settings

from billing.catalog.tests.factories import PlanFactory, PriceFactory
from billing.models import Plan, StripePrice
from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer
from payments_project.accounts.selectors import audit_entries_for
from payments_project.accounts.tests.factories import UserFactory
from subscriptions import services
from subscriptions.models import Subscription, SubscriptionHistory
from subscriptions.tests.factories import SubscriptionFactory

pytestmark = [pytest.mark.django_db]


@pytest.fixture(scope="module")
def standin_server() -> Iterator[StandinServer]:
    with StandinServer() as server:
        yield server


@pytest.fixture
def stripe_client(standin_server: StandinServer) -> Iterator[stripe.StripeClient]:
    """Our gateway pointed at a fresh stand-in."""
    standin_server.reset()
    with override_settings(STRIPE_API_BASE=standin_server.url, STRIPE_MAX_NETWORK_RETRIES=0):
        stripe_gateway.client.cache_clear()
        yield stripe_gateway.client()
    stripe_gateway.client.cache_clear()


@pytest.fixture
def remote(stripe_client: stripe.StripeClient) -> stripe.Subscription:
    """A subscription on the stand-in, on a monthly price."""
    product = stripe_client.v1.products.create({"name": "Pro"})
    price = stripe_client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 999, "recurring": {"interval": "month"}}
    )
    customer = stripe_client.v1.customers.create({"email": "owner@example.com"})
    card = stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    stripe_client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    return stripe_client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})


@pytest.fixture
def subscription(remote: stripe.Subscription) -> Subscription:
    owner = UserFactory(username="owner")
    row = Subscription.objects.get(pk=SubscriptionFactory(stripe_subscription_id=remote.id, user=owner).pk)
    return row


def test_list_shows_only_my_subscriptions(api_client) -> None:
    # given my subscription and someone else's
    mine = SubscriptionFactory(user=UserFactory(username="me"))
    SubscriptionFactory()
    api_client.force_authenticate(mine.user)
    # when I list
    response = api_client.get("/api/v1/subscriptions/")
    # then only mine
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [mine.pk]


def test_staff_lists_anyones_by_user_id(api_client) -> None:
    # given someone's subscription and a staff member
    theirs = SubscriptionFactory()
    service = UserFactory(username="service")
    service.groups.add(Group.objects.get(name="service"))
    api_client.force_authenticate(service)
    # when staff lists with ?user_id=
    response = api_client.get(f"/api/v1/subscriptions/?user_id={theirs.user_id}")
    # then theirs
    assert [row["id"] for row in response.json()["results"]] == [theirs.pk]


def test_user_asking_for_someone_elses_list_is_refused(api_client) -> None:
    # given two users / when one lists the other's / then 403
    other = SubscriptionFactory()
    api_client.force_authenticate(UserFactory(username="me"))
    response = api_client.get(f"/api/v1/subscriptions/?user_id={other.user_id}")
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("post", "cancel"), ("post", "resume"), ("post", "change-plan")],
)
def test_someone_elses_subscription_is_not_found(api_client, method, suffix) -> None:
    # given someone else's subscription
    theirs = SubscriptionFactory()
    api_client.force_authenticate(UserFactory(username="me"))
    # when I read or act on it
    response = getattr(api_client, method)(f"/api/v1/subscriptions/{theirs.pk}/{suffix}", format="json")
    # then 404, and nothing changed
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert SubscriptionHistory.objects.count() == 0


def test_retrieve_mine(api_client) -> None:
    mine = SubscriptionFactory(user=UserFactory(username="me"))
    api_client.force_authenticate(mine.user)
    response = api_client.get(f"/api/v1/subscriptions/{mine.pk}/")
    assert response.status_code == 200
    assert (response.json()["id"], response.json()["status"]) == (mine.pk, "active")


def test_cancel_at_period_end(api_client, subscription, stripe_client, sent) -> None:
    # given my active subscription, known to Stripe
    api_client.force_authenticate(subscription.user)
    # when I cancel
    response = api_client.post(f"/api/v1/subscriptions/{subscription.pk}/cancel", {}, format="json")
    # then Stripe and our row both say: at the period end; still active, nothing revoked
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["cancel_at_period_end"]) == ("active", True)
    assert stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id).cancel_at_period_end
    subscription.refresh_from_db()
    assert subscription.cancel_at_period_end is True
    assert list(subscription.history.values_list("cause", "note")) == [
        ("api", "cancel at period end requested")
    ]
    assert sent.names() == []


def test_user_asking_immediate_cancel_is_forbidden(api_client, subscription, stripe_client) -> None:
    # given my subscription / when I ask to cancel immediately
    api_client.force_authenticate(subscription.user)
    response = api_client.post(
        f"/api/v1/subscriptions/{subscription.pk}/cancel", {"immediately": True}, format="json"
    )
    # then 403 and Stripe untouched
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    remote = stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id)
    assert remote.status != "canceled"
    assert remote.cancel_at_period_end is False


def test_staff_cancels_immediately(api_client, subscription, stripe_client, sent) -> None:
    # given a staff member
    staff = UserFactory(username="staff", is_staff=True)
    staff.groups.add(Group.objects.get(name="finance"))
    api_client.force_authenticate(staff)
    # when staff cancels someone's subscription immediately
    response = api_client.post(
        f"/api/v1/subscriptions/{subscription.pk}/cancel", {"immediately": True}, format="json"
    )
    # then cancelled in Stripe and here, audited, cancelled signal sent
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id).status == "canceled"
    assert list(subscription.history.values_list("from_status", "to_status", "cause", "staff_user")) == [
        ("active", "cancelled", "staff", staff.pk)
    ]
    assert sent.names() == ["cancelled"]


def test_resume_undoes_pending_cancel(api_client, subscription, stripe_client) -> None:
    # given a cancellation pending at the period end
    services.subscription_cancel(subscription=subscription, actor=subscription.user)
    api_client.force_authenticate(subscription.user)
    # when I resume
    response = api_client.post(f"/api/v1/subscriptions/{subscription.pk}/resume")
    # then no cancellation pending, in Stripe and here
    assert response.status_code == 200
    assert response.json()["cancel_at_period_end"] is False
    assert not stripe_client.v1.subscriptions.retrieve(
        subscription.stripe_subscription_id
    ).cancel_at_period_end
    # and cancelling again (new row state -> new idempotency key) reaches Stripe again
    services.subscription_cancel(subscription=subscription, actor=subscription.user)
    assert stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id).cancel_at_period_end


def test_resume_without_pending_cancel_is_a_conflict(api_client, subscription, stripe_client) -> None:
    api_client.force_authenticate(subscription.user)
    response = api_client.post(f"/api/v1/subscriptions/{subscription.pk}/resume")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "not_pending_cancel")


def test_stripe_error_writes_nothing(api_client, stripe_client) -> None:
    # given a row whose Stripe subscription does not exist on Stripe
    sub = SubscriptionFactory(user=UserFactory(username="me"), stripe_subscription_id="sub_missing")
    api_client.force_authenticate(sub.user)
    # when I cancel
    response = api_client.post(f"/api/v1/subscriptions/{sub.pk}/cancel", {}, format="json")
    # then Stripe's refusal is answered and nothing is half-written
    assert (response.status_code, response.json()["error"]["code"]) == (400, "stripe_invalid_request")
    sub.refresh_from_db()
    assert sub.cancel_at_period_end is False
    assert SubscriptionHistory.objects.count() == 0


def test_change_plan_without_stripe_price_is_refused(api_client, subscription, stripe_client) -> None:
    # given a target plan with a list price but no Stripe price pushed yet
    target = PlanFactory(code="max")
    PriceFactory(plan=target, currency="USD", amount=1999)
    api_client.force_authenticate(subscription.user)
    # when I ask to change plan
    response = api_client.post(
        f"/api/v1/subscriptions/{subscription.pk}/change-plan", {"plan": "max"}, format="json"
    )
    # then 409 stripe_price_missing, nothing changed
    assert (response.status_code, response.json()["error"]["code"]) == (409, "stripe_price_missing")
    subscription.refresh_from_db()
    assert subscription.plan.code != "max"


def test_change_plan_moves_stripe_and_our_row(api_client, subscription, stripe_client, sent) -> None:
    # given a target plan with its Stripe price
    target = Plan.objects.get(pk=PlanFactory(code="max").pk)
    PriceFactory(plan=target, currency="USD", amount=1999)
    product = stripe_client.v1.products.create({"name": "Max"})
    new_price = stripe_client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 1999, "recurring": {"interval": "month"}}
    )
    StripePrice.objects.create(
        plan=target, currency="USD", amount=1999, interval="month", stripe_price_id=new_price.id
    )
    api_client.force_authenticate(subscription.user)
    # when I change plan
    response = api_client.post(
        f"/api/v1/subscriptions/{subscription.pk}/change-plan", {"plan": "max"}, format="json"
    )
    # then Stripe bills the new price, our row follows, plan_changed is sent
    assert response.status_code == 200
    remote = stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id)
    assert remote["items"]["data"][0]["price"]["id"] == new_price.id
    subscription.refresh_from_db()
    assert (subscription.plan.code, subscription.amount, subscription.currency) == ("max", 1999, "USD")
    assert sent.names() == ["plan_changed"]


def test_staff_extend_period_moves_stripe_and_our_row_and_is_audited(
    subscription: Subscription, stripe_client: stripe.StripeClient, sent
) -> None:
    # given an active subscription and a support agent
    staff = UserFactory(username="agent", is_staff=True)
    staff.groups.add(Group.objects.get(name="finance"))
    end = subscription.current_period_end
    assert end is not None

    # when support extends it by 7 days
    services.subscription_extend_period(subscription=subscription, days=7, staff_user=staff, note="outage")

    # then Stripe defers the next charge to the new end, our period follows, the history says who
    from datetime import timedelta

    new_end = end + timedelta(days=7)
    remote = stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id)
    assert remote.trial_end == int(new_end.timestamp())
    subscription.refresh_from_db()
    assert subscription.current_period_end == new_end
    entry = SubscriptionHistory.objects.filter(subscription=subscription).last()
    assert (entry.cause, entry.staff_user, entry.note) == (
        "staff",
        staff,
        "period extended by 7 days: outage",
    )
    assert sent.names() == ["renewed"]
    assert list(
        audit_entries_for(user_id=subscription.user_id).values_list(
            "actor__username", "action", "target_id", "reason"
        )
    ) == [("agent", "subscription.extend_period", str(subscription.pk), "period extended by 7 days: outage")]
