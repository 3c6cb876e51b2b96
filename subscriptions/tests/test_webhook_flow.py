"""A subscription bought through Checkout, driven by Stripe events through the real webhook URL.

The stand-in plays Stripe: it creates the subscription and its first invoice when the test card
pays; the events carry those objects, and dj-stripe re-reads them from the stand-in.
"""

import json
import random
import urllib.request
from typing import Any

import pytest
from django.test import Client

from billing.catalog.tests.factories import FeatureFactory, PlanFactory, PlanFeatureFactory, PriceFactory
from billing.models import StripeEvent
from billing.stripe import gateway as stripe_gateway
from billing.stripe.tests.events import deliver, event
from devtools.testing import StandinServer
from entitlements.selectors import entitlement_check
from payments_project.accounts.tests.factories import UserFactory
from subscriptions.checkout.services import checkout_session_create
from subscriptions.models import Subscription


def _pay(standin: StandinServer, session_id: str) -> None:
    request = urllib.request.Request(
        f"{standin.url}/_dev/checkout/{session_id}/complete",
        data=json.dumps({"card": "4242424242424242"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).read()


@pytest.fixture
def bought(stripe_standin: StandinServer) -> dict[str, Any]:
    """A user who paid a monthly plan on the stand-in's checkout page; the events Stripe sends."""
    user = UserFactory(username="buyer")
    pro = PlanFactory(code="pro")
    PriceFactory(plan=pro, currency="USD", amount=999)
    PlanFeatureFactory(plan=pro, feature=FeatureFactory(code="export_pdf"))
    session = checkout_session_create(
        user=user,
        plan_code="pro",
        country=None,
        zone_code=None,
        success_url="https://example.com/ok",
        cancel_url="https://example.com/no",
    )
    _pay(stripe_standin, session["id"])
    sdk = stripe_gateway.client()
    completed = sdk.v1.checkout.sessions.retrieve(session["id"])
    remote = sdk.v1.subscriptions.retrieve(completed.subscription)
    invoice = sdk.v1.invoices.retrieve(remote.latest_invoice)
    created = int(remote.created)
    return {
        "user": user,
        "stripe_id": remote.id,
        "events": [
            event("checkout.session.completed", completed, created=created),
            event("customer.subscription.created", remote, created=created),
            event("invoice.payment_succeeded", invoice, created=created + 1),
        ],
    }


def _state(stripe_id: str) -> tuple[Any, ...]:
    sub = Subscription.objects.get(stripe_subscription_id=stripe_id)
    return (
        sub.user.username,
        sub.plan.code,
        sub.status,
        sub.current_period_end is not None,
        sub.amount,
        sub.currency,
    )


def _deliver_all(client: Client, events: list[dict[str, Any]], capture: Any) -> None:
    for payload in events:
        with capture(execute=True):
            assert deliver(client, payload).status_code == 200


@pytest.mark.django_db
def test_checkout_then_events_in_order_make_an_active_subscription(
    client: Client, bought: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    _deliver_all(client, bought["events"], django_capture_on_commit_callbacks)
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"done"}
    assert _state(bought["stripe_id"]) == ("buyer", "pro", "active", True, 999, "USD")


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_and_duplicated_events_end_in_the_same_state(
    client: Client, bought: dict[str, Any], seed: int, django_capture_on_commit_callbacks: Any
) -> None:
    # given the same events, each twice, in a shuffled order
    events = bought["events"] * 2
    random.Random(seed).shuffle(events)

    # when all are delivered
    _deliver_all(client, events, django_capture_on_commit_callbacks)

    # then one subscription, in the same state as the ordered delivery, each event processed once
    assert Subscription.objects.count() == 1
    assert _state(bought["stripe_id"]) == ("buyer", "pro", "active", True, 999, "USD")
    assert sorted(StripeEvent.objects.values_list("attempts", "deliveries")) == [(1, 2)] * 3


@pytest.mark.django_db
def test_a_cancellation_at_stripe_reaches_us_through_the_deleted_event(
    client: Client, bought: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    # given the active subscription
    _deliver_all(client, bought["events"], django_capture_on_commit_callbacks)

    # when it is cancelled at Stripe and Stripe says so
    cancelled = stripe_gateway.client().v1.subscriptions.cancel(bought["stripe_id"])
    _deliver_all(
        client,
        [event("customer.subscription.deleted", cancelled, created=int(cancelled.created) + 3600)],
        django_capture_on_commit_callbacks,
    )

    # then ours is cancelled too
    assert _state(bought["stripe_id"])[2] == "cancelled"


def _allowed(user: Any) -> tuple[bool, str]:
    result = entitlement_check(user_id=user.pk, features=["export_pdf"])[0]
    return result["allowed"], result["reason"]


@pytest.mark.django_db
def test_the_buyer_is_entitled_once_stripe_confirms_and_loses_it_on_cancellation(
    client: Client, bought: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    # given a paid checkout: not yet entitled until Stripe's events arrive
    buyer = bought["user"]
    assert _allowed(buyer) == (False, "no_subscription")

    # when the events arrive, then the very next check allows the plan's feature
    _deliver_all(client, bought["events"], django_capture_on_commit_callbacks)
    assert _allowed(buyer) == (True, "granted")

    # when Stripe says the subscription was deleted, then the next check refuses it
    cancelled = stripe_gateway.client().v1.subscriptions.cancel(bought["stripe_id"])
    _deliver_all(
        client,
        [event("customer.subscription.deleted", cancelled, created=int(cancelled.created) + 3600)],
        django_capture_on_commit_callbacks,
    )
    assert _allowed(buyer)[0] is False


@pytest.mark.django_db
def test_a_late_payment_failed_for_an_invoice_paid_since_changes_nothing(
    client: Client, bought: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    # given the active subscription whose first invoice is paid
    _deliver_all(client, bought["events"], django_capture_on_commit_callbacks)
    invoice = bought["events"][2]["data"]["object"]

    # when an older invoice.payment_failed for that invoice arrives late
    failed = dict(invoice, status="open", paid=False, attempt_count=1)
    _deliver_all(
        client,
        [event("invoice.payment_failed", failed, created=bought["events"][0]["created"])],
        django_capture_on_commit_callbacks,
    )

    # then the subscription stays active (Stripe's current invoice is paid)
    assert _state(bought["stripe_id"])[2] == "active"
    assert _allowed(bought["user"]) == (True, "granted")


@pytest.mark.django_db
def test_payment_failed_on_an_unpaid_invoice_makes_the_subscription_past_due(
    client: Client, bought: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    # given the active subscription, and a renewal invoice that Stripe could not charge
    _deliver_all(client, bought["events"], django_capture_on_commit_callbacks)
    sdk = stripe_gateway.client()
    customer = sdk.v1.subscriptions.retrieve(bought["stripe_id"]).customer
    sdk.v1.invoice_items.create({"customer": customer, "amount": 999, "currency": "usd"})
    renewal = sdk.v1.invoices.create({"customer": customer, "subscription": bought["stripe_id"]})
    assert renewal.status != "paid"

    # when Stripe reports the failure
    _deliver_all(client, [event("invoice.payment_failed", renewal)], django_capture_on_commit_callbacks)

    # then the subscription is past due; the default dunning policy keeps its features usable
    # while the renewal is retried (docs/dunning.md: access is never cut during the retries)
    assert _state(bought["stripe_id"])[2] == "past_due"
    assert _allowed(bought["user"]) == (True, "granted")
