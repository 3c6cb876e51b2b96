"""At most one live subscription per customer and per family (issue 14, part 3).

Two Checkout Sessions paid for one customer: Stripe then runs two subscriptions. The database
keeps one live (partial unique constraints); the second to go live is cancelled at once, then
cancelled and refunded at Stripe, with the reason on its history and in the audit log. Driven
through the real webhook URL with signed events, against the stand-in.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection
from django.test import Client
from django.utils.html import escape

from billing.catalog.tests.factories import FeatureFactory, PlanFactory, PlanFeatureFactory, PriceFactory
from billing.models import StripeEvent
from billing.stripe import gateway as stripe_gateway
from billing.stripe.tests.events import deliver, event
from devtools.testing import StandinServer
from entitlements.selectors import entitlement_check
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.tests.factories import UserFactory
from payments_project.errors import Conflict
from subscriptions.checkout.services import checkout_session_create
from subscriptions.models import Subscription, SubscriptionHistory
from subscriptions.services import subscription_transition
from subscriptions.tests.factories import FamilyFactory, SubscriptionFactory


def _checkout(user: Any, plan_code: str = "pro") -> str:
    return str(
        checkout_session_create(
            user=user,
            plan_code=plan_code,
            country=None,
            zone_code=None,
            success_url="https://example.com/ok",
            cancel_url="https://example.com/no",
        )["id"]
    )


def _pay(standin: StandinServer, session_id: str) -> None:
    request = urllib.request.Request(
        f"{standin.url}/_dev/checkout/{session_id}/complete",
        data=json.dumps({"card": "4242424242424242"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).read()


def _events(session_id: str) -> dict[str, Any]:
    """The signed events Stripe sends for a paid Checkout Session, by kind."""
    sdk = stripe_gateway.client()
    completed = sdk.v1.checkout.sessions.retrieve(session_id)
    remote = sdk.v1.subscriptions.retrieve(completed.subscription)
    created = int(remote.created)
    events = {
        "stripe_id": remote.id,
        "completed": event("checkout.session.completed", completed, created=created),
        "created": event("customer.subscription.created", remote, created=created),
    }
    if remote.latest_invoice:
        invoice = sdk.v1.invoices.retrieve(remote.latest_invoice)
        events["paid"] = event("invoice.payment_succeeded", invoice, created=created + 1)
    return events


def _deliver(client: Client, payload: dict[str, Any], capture: Any | None) -> None:
    if capture is None:
        assert deliver(client, payload).status_code == 200
        return
    with capture(execute=True):
        assert deliver(client, payload).status_code == 200


def _all(client: Client, events: dict[str, Any], capture: Any | None) -> None:
    for kind in ("completed", "created", "paid"):
        if kind in events:
            _deliver(client, events[kind], capture)


@pytest.fixture
def buyer(stripe_standin: StandinServer) -> Any:
    """A customer and the catalog: Pro (9.99 USD a month, no trial), Trial (14 days free)."""
    pro = PlanFactory(code="pro")
    PriceFactory(plan=pro, currency="USD", amount=999)
    trial = PlanFactory(code="trial", trial_days=14)
    PriceFactory(plan=trial, currency="USD", amount=1999)
    feature = FeatureFactory(code="export_pdf")
    PlanFeatureFactory(plan=pro, feature=feature)
    PlanFeatureFactory(plan=trial, feature=feature)
    return UserFactory(username="twice")


def _two_paid(standin: StandinServer, user: Any, plan_code: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two sessions paid one after the other before any event reached us (the issue's case)."""
    first = _checkout(user, plan_code)
    _pay(standin, first)
    second = _checkout(user, plan_code)  # the first is complete: nothing open to expire
    _pay(standin, second)
    return _events(first), _events(second)


def _refunds_of(stripe_id: str) -> list[int]:
    sdk = stripe_gateway.client()
    amounts = []
    for invoice in sdk.v1.invoices.list({"subscription": stripe_id}).data:
        if invoice.get("payment_intent"):
            amounts += [
                r.amount for r in sdk.v1.refunds.list({"payment_intent": invoice.payment_intent}).data
            ]
    return amounts


def _assert_one_kept(user: Any, kept_id: str, dropped_id: str, refunded: list[int]) -> None:
    kept = Subscription.objects.get(stripe_subscription_id=kept_id)
    dropped = Subscription.objects.get(stripe_subscription_id=dropped_id)
    # one live subscription: the one Stripe confirmed to us first
    assert (kept.status, kept.duplicate_of) == ("active", None)
    assert (dropped.status, dropped.duplicate_of, dropped.duplicate_settled_at is not None) == (
        "cancelled",
        kept,
        True,
    )
    # Stripe's side: the duplicate is cancelled there and what it charged refunded
    sdk = stripe_gateway.client()
    assert sdk.v1.subscriptions.retrieve(dropped_id).status == "canceled"
    assert sdk.v1.subscriptions.retrieve(kept_id).status in ("active", "trialing")
    assert _refunds_of(dropped_id) == refunded
    assert _refunds_of(kept_id) == []
    # what support sees: the reason on the duplicate's history and in the audit log
    notes = list(dropped.history.values_list("to_status", "cause", "note"))
    assert notes[-2][:2] == ("cancelled", SubscriptionHistory.Cause.WEBHOOK)
    assert notes[-2][2].startswith(f"Duplicate: the customer already had a live subscription #{kept.pk} ")
    expected = "refunded $9.99." if refunded else "nothing had been charged (trial or unpaid)."
    assert notes[-1] == (
        "cancelled",
        SubscriptionHistory.Cause.WEBHOOK,
        f"Duplicate cancelled at Stripe; {expected}",
    )
    audit = list(
        AuditLogEntry.objects.filter(subject_user_id=user.pk)
        .order_by("pk")
        .values_list("action", "target_id")
    )
    assert audit == [
        ("subscription.duplicate_cancelled", str(dropped.pk)),
        ("subscription.duplicate_settled", str(dropped.pk)),
    ]
    # the customer keeps the access of the first
    result = entitlement_check(user_id=user.pk, features=["export_pdf"])[0]
    assert (result["allowed"], result["plan"]) == (True, kept.plan.code)
    # and support reads both notes on the customer's page in the admin
    support = UserFactory(username="support_on_duty", is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    browser = Client()
    browser.force_login(support)
    page = browser.get(f"/admin/accounts/customer/{user.pk}/change/")
    assert page.status_code == 200
    assert escape(notes[-2][2]) in page.content.decode()
    assert escape(f"Duplicate cancelled at Stripe; {expected}") in page.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("first", ["older", "newer"])
def test_two_paid_checkouts_keep_one_subscription_and_refund_the_other_whatever_the_event_order(
    client: Client,
    buyer: Any,
    stripe_standin: StandinServer,
    django_capture_on_commit_callbacks: Any,
    first: str,
) -> None:
    # given two subscriptions paid at Stripe for the same customer
    older, newer = _two_paid(stripe_standin, buyer, "pro")
    ahead, behind = (older, newer) if first == "older" else (newer, older)

    # when Stripe's signed events arrive: all of one subscription's, then the other's
    _all(client, ahead, django_capture_on_commit_callbacks)
    _all(client, behind, django_capture_on_commit_callbacks)

    # then the one confirmed first is kept; the other is cancelled, refunded and explained
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"done"}
    _assert_one_kept(buyer, ahead["stripe_id"], behind["stripe_id"], refunded=[999])


@pytest.mark.django_db
def test_a_second_trial_is_ended_with_no_charge(
    client: Client, buyer: Any, stripe_standin: StandinServer, django_capture_on_commit_callbacks: Any
) -> None:
    # given two trial subscriptions started for the same customer
    older, newer = _two_paid(stripe_standin, buyer, "trial")

    # when their events arrive
    _all(client, older, django_capture_on_commit_callbacks)
    _all(client, newer, django_capture_on_commit_callbacks)

    # then the second trial is cancelled at once at Stripe, nothing to refund
    kept = Subscription.objects.get(stripe_subscription_id=older["stripe_id"])
    dropped = Subscription.objects.get(stripe_subscription_id=newer["stripe_id"])
    assert (kept.status, dropped.status, dropped.duplicate_of) == ("trialing", "cancelled", kept)
    assert stripe_gateway.client().v1.subscriptions.retrieve(newer["stripe_id"]).status == "canceled"
    assert dropped.history.last().note == (
        "Duplicate cancelled at Stripe; nothing had been charged (trial or unpaid)."
    )


@pytest.mark.django_db(transaction=True)
def test_two_subscriptions_going_live_at_the_same_moment_leave_one_live(
    buyer: Any, stripe_standin: StandinServer
) -> None:
    # given two subscriptions paid at Stripe, each known to us from its checkout event
    older, newer = _two_paid(stripe_standin, buyer, "pro")
    for events in (older, newer):
        assert deliver(Client(), events["completed"]).status_code == 200
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def go_live(events: dict[str, Any]) -> None:
        try:
            start.wait(timeout=10)
            for kind in ("created", "paid"):
                assert deliver(Client(), events[kind]).status_code == 200
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    # when both subscriptions' events are processed at once, on two connections to PostgreSQL
    threads = [threading.Thread(target=go_live, args=(events,)) for events in (older, newer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # then exactly one is live and the other was cancelled and refunded, whichever won
    assert errors == []
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"done"}
    live = Subscription.objects.get(user=buyer, status="active")
    dropped = Subscription.objects.exclude(pk=live.pk).get(user=buyer)
    _assert_one_kept(buyer, live.stripe_subscription_id, dropped.stripe_subscription_id, refunded=[999])


@pytest.mark.django_db
def test_a_new_checkout_expires_the_open_one_so_it_can_no_longer_be_paid(
    buyer: Any, stripe_standin: StandinServer
) -> None:
    # given an open Checkout Session in another tab
    first = _checkout(buyer)

    # when the customer starts another checkout
    second = _checkout(buyer)

    # then the first is expired at Stripe and paying it is refused; the second can be paid
    sdk = stripe_gateway.client()
    assert (
        sdk.v1.checkout.sessions.retrieve(first).status,
        sdk.v1.checkout.sessions.retrieve(second).status,
    ) == (
        "expired",
        "open",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        _pay(stripe_standin, first)
    assert json.loads(refused.value.read())["error"]["message"] == "This Checkout Session is expired."
    _pay(stripe_standin, second)


@pytest.mark.django_db
def test_the_database_refuses_a_second_live_subscription_per_user_and_per_family() -> None:
    # given a live subscription held by a family's owner
    family = FamilyFactory()
    SubscriptionFactory(user=family.owner, family=family, status=Subscription.Status.ACTIVE)

    # then a second live one for the owner, or for another member of the family, is refused
    with pytest.raises(IntegrityError, match="subscription_one_live_per_user"):
        with_savepoint(lambda: SubscriptionFactory(user=family.owner, status=Subscription.Status.PAST_DUE))
    with pytest.raises(IntegrityError, match="subscription_one_live_per_family"):
        with_savepoint(lambda: SubscriptionFactory(family=family, status=Subscription.Status.TRIALING))
    # and ended or incomplete ones are not limited
    SubscriptionFactory(user=family.owner, status=Subscription.Status.CANCELLED)
    SubscriptionFactory(user=family.owner, status=Subscription.Status.INCOMPLETE)


def with_savepoint(create: Any) -> None:
    from django.db import transaction

    with transaction.atomic():
        create()


@pytest.mark.django_db
def test_staff_cannot_bring_back_a_second_live_subscription() -> None:
    # given a live subscription and an incomplete one for the same customer
    live = SubscriptionFactory(status=Subscription.Status.ACTIVE)
    other = SubscriptionFactory(user=live.user, status=Subscription.Status.INCOMPLETE)

    # when staff activate the incomplete one, then 409 and nothing changed
    with pytest.raises(Conflict) as refused:
        subscription_transition(
            subscription=other, to_status=Subscription.Status.ACTIVE, cause=SubscriptionHistory.Cause.STAFF
        )
    assert refused.value.code == "already_subscribed"
    other.refresh_from_db()
    assert other.status == Subscription.Status.INCOMPLETE
