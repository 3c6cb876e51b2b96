"""Every event type comes out of the real flows (the API, signed Stripe webhooks, the admin and the
catalog load), once per fact, and reaches the broker with a payload valid against its schema.

The stand-in plays Stripe; the relay publishes to Tansu on loopback; a consumer reads it back.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from billing.catalog.services import catalog_load, catalog_push_to_stripe
from billing.catalog.tests.factories import FeatureFactory
from billing.catalog.tests.test_events import admin_delete, admin_price_delete
from billing.models import Payment, Plan, PricingZone
from billing.payments.services import refund_create
from billing.stripe import gateway as stripe_gateway
from billing.stripe.tests.events import deliver, event
from devtools.testing import StandinServer
from entitlements.models import Entitlement
from entitlements.tests.factories import EntitlementFactory
from payments_project.accounts.tests.factories import UserFactory
from payments_project.events.models import DomainEvent
from payments_project.events.registry import event_type_get
from payments_project.events.tests.conftest import make_relay, read_topic
from payments_project.events.tests.test_catalog import EXPECTED_TYPES
from payments_project.tests.helpers import token_client
from subscriptions.dunning.models import DunningAttempt
from subscriptions.dunning.services import dunning_attempt_run, dunning_decline_fetch, dunning_invoice_failed
from subscriptions.models import Subscription

CATALOG = {
    "features": [{"code": "export_pdf", "name": "PDF export"}, {"code": "family_share", "name": "Sharing"}],
    "plans": [
        {"code": "pro", "name": "Pro", "prices": {"USD": 999}, "features": [{"feature": "export_pdf"}]},
        {"code": "basic", "name": "Basic", "prices": {"USD": 499, "EUR": 449}},
        {
            "code": "team",
            "name": "Team",
            "family": True,
            "max_members": 3,
            "prices": {"USD": 1999},
            "features": [{"feature": "export_pdf"}, {"feature": "family_share"}],
        },
    ],
    "zones": [
        {"code": "us", "name": "United States", "currency": "USD", "countries": ["US"], "default": True},
        {"code": "eu", "name": "Europe", "currency": "EUR", "countries": ["FR"]},
    ],
}

# What the flows below must have published: (type, how many times).
EXPECTED = {
    "catalog.price_changed": 4,  # pro's and team's list price, basic's two
    "catalog.plan_changed": 4,  # pro, basic, team, then basic again when its EUR price is deleted
    "catalog.zone_changed": 2,
    "catalog.price_deleted": 1,  # basic's EUR price, deleted in the admin
    "catalog.plan_deleted": 1,  # then basic, never sold
    "catalog.zone_deleted": 1,  # eu
    "dunning.case_opened": 1,  # a renewal that failed
    "dunning.retry_finished": 1,  # its first retry paid it
    "dunning.stage_changed": 1,  # past_due -> recovered
    "checkout.completed": 1,  # delivered twice by Stripe, announced once
    "subscription.created": 1,
    "subscription.status_changed": 2,  # incomplete -> active, active -> cancelled
    "subscription.plan_changed": 1,
    "subscription.cancel_scheduled": 1,
    "subscription.resumed": 1,
    "subscription.cancelled": 1,
    "entitlement.granted": 2,  # export_pdf and family_share on activation
    "entitlement.revoked": 2,  # family_share on the move to pro, export_pdf on cancellation
    "entitlement.suspended": 1,
    "family.member_added": 2,  # the owner on creation, then a member
    "family.member_removed": 1,
    "payment.succeeded": 1,
    "payment.failed": 1,
    "payment.refunded": 1,
    "usage.threshold_reached": 2,  # 80% then 100% of a limit, each once (a replayed event adds none)
}


def _pay(standin: StandinServer, session_id: str) -> None:
    request = urllib.request.Request(
        f"{standin.url}/_dev/checkout/{session_id}/complete",
        data=json.dumps({"card": "4242424242424242"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).read()


def _staff(group: str) -> Any:
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def _webhooks(client: Client, capture: Any, *payloads: dict[str, Any]) -> None:
    for payload in payloads:
        with capture(execute=True):
            assert deliver(client, payload).status_code == 200


@pytest.mark.django_db
def test_the_real_flows_publish_every_event_type_once_per_fact_with_valid_payloads(
    client: Client, stripe_standin: StandinServer, kafka_topic: str, django_capture_on_commit_callbacks: Any
) -> None:
    # the catalog, loaded and pushed to Stripe as `manage.py catalog_load --push` does
    catalog_load(data=CATALOG)
    # staff delete a price, a plan never sold and a zone in the admin (before the push: a plan
    # with prices at Stripe cannot be deleted)
    catalog_staff = Client()
    catalog_staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    assert admin_price_delete(catalog_staff, plan="basic", currency="EUR").status_code == 302
    assert admin_delete(catalog_staff, Plan.objects.get(code="basic")).status_code == 302
    assert admin_delete(catalog_staff, PricingZone.objects.get(code="eu")).status_code == 302
    catalog_push_to_stripe()

    # a customer buys Team through Checkout; Stripe's events arrive signed (checkout's twice)
    owner, member = UserFactory(username="owner"), UserFactory(username="member")
    customer = token_client(owner)
    session = customer.post(
        "/api/v1/checkout-sessions/",
        {
            "plan": "team",
            "country": "US",
            "success_url": "https://e.com/ok",
            "cancel_url": "https://e.com/no",
        },
        format="json",
    ).json()
    _pay(stripe_standin, session["id"])
    sdk = stripe_gateway.client()
    completed = sdk.v1.checkout.sessions.retrieve(session["id"])
    remote = sdk.v1.subscriptions.retrieve(completed.subscription)
    checkout_event = event("checkout.session.completed", completed)
    _webhooks(
        client,
        django_capture_on_commit_callbacks,
        checkout_event,
        event("customer.subscription.created", remote),
        {**checkout_event, "id": checkout_event["id"] + "_again"},
    )
    subscription = Subscription.objects.get(stripe_subscription_id=remote.id)
    assert subscription.status == "active"

    # a renewal invoice fails: dunning opens its case, and the first retry pays it
    sdk.v1.invoice_items.create({"customer": remote.customer, "amount": 999, "currency": "usd"})
    renewal = sdk.v1.invoices.create({"customer": remote.customer, "subscription": remote.id})
    case = dunning_invoice_failed(data={**renewal.to_dict(), "status": "open"})
    assert case is not None
    # (the event carried no card codes: they are read from Stripe after commit, as the task does)
    assert dunning_decline_fetch(case_id=case.pk) == "retry"
    first = case.attempts.get(number=1)
    DunningAttempt.objects.filter(pk=first.pk).update(
        status="claimed", claimed_until=timezone.now() + timedelta(minutes=5)
    )
    assert dunning_attempt_run(attempt_id=first.pk) == "succeeded"

    # the family: created by the owner, a member added and removed through the API
    family = customer.post("/api/v1/families/", {"name": "Home"}, format="json").json()
    # (Checkout does not carry a family yet: the family subscription is linked here)
    Subscription.objects.filter(pk=subscription.pk).update(family_id=family["id"])
    invited = customer.post(f"/api/v1/families/{family['id']}/invitations", {"user_id": member.pk}).json()
    accept = token_client(member).post(f"/api/v1/families/invitations/{invited['id']}/accept")
    assert accept.status_code == 200
    assert customer.delete(f"/api/v1/families/{family['id']}/members/{member.pk}").status_code == 204

    # the customer schedules a cancellation, undoes it, and moves to Pro; a refused change emits nothing
    url = f"/api/v1/subscriptions/{subscription.pk}"
    assert customer.post(f"{url}/cancel", {}, format="json").status_code == 200
    assert customer.post(f"{url}/resume", {}, format="json").status_code == 200
    assert customer.post(f"{url}/resume", {}, format="json").status_code == 409
    assert customer.post(f"{url}/change-plan", {"plan": "pro"}, format="json").status_code == 200

    # finance suspends the PDF export in the admin, then cancels the subscription at once
    finance = _staff("finance")
    admin = Client()
    admin.force_login(finance)
    pdf = Entitlement.objects.get(subscription=subscription, feature__code="export_pdf")
    assert (
        admin.post(
            "/admin/entitlements/entitlement/",
            {"action": "suspend_selected", "_selected_action": [pdf.pk]},
        ).status_code
        == 302
    )
    assert (
        token_client(finance).post(f"{url}/cancel", {"immediately": True}, format="json").status_code == 200
    )

    # one-time payments: one paid, one declined; finance refunds the paid one
    paid = customer.post(
        "/api/v1/payments/",
        {"amount": 1500, "currency": "EUR", "payment_method": "pm_card_visa"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="order-1",
    )
    declined = customer.post(
        "/api/v1/payments/",
        {"amount": 700, "currency": "EUR", "payment_method": "pm_card_visa_chargeDeclined"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="order-2",
    )
    assert (paid.status_code, declined.status_code) == (201, 402)
    refund_create(
        payment_id=paid.json()["id"],
        amount=500,
        reason="requested_by_customer",
        staff_user=finance,
        note="goodwill",
    )
    assert Payment.objects.get(pk=paid.json()["id"]).amount_refunded == 500

    # a customer's metered usage reaches 80% then 100% of its limit; a replay announces nothing more
    meter = FeatureFactory(code="api_calls", kind="metered")
    metered = UserFactory(username="metered")
    EntitlementFactory(user=metered, feature=meter, limit=10)
    usage_api = token_client(metered)
    for key, quantity, status in (("a", 8, 201), ("b", 2, 201), ("b", 2, 200), ("c", 1, 429)):
        answer = usage_api.post(
            "/api/v1/usage/events/",
            {"feature": "api_calls", "idempotency_key": key, "quantity": quantity},
            format="json",
        )
        assert answer.status_code == status

    # when the relay publishes the outbox
    relay = make_relay("flows")
    while relay.publish_once():
        pass

    # then the topic holds each fact once, every payload valid against its type's schema
    total = DomainEvent.objects.count()
    messages = read_topic(kafka_topic, count=total + 1, idle_timeout=3)
    envelopes = [json.loads(message.value) for message in messages]
    assert len(envelopes) == total
    assert dict(Counter(envelope["type"] for envelope in envelopes)) == EXPECTED
    assert set(EXPECTED) == EXPECTED_TYPES
    for envelope in envelopes:
        declared = event_type_get(envelope["type"])
        assert declared is not None
        declared.validate(envelope["data"])
    # money as minor units and currency; per aggregate, numbered in order
    refunded = next(e["data"] for e in envelopes if e["type"] == "payment.refunded")
    assert (refunded["amount"], refunded["currency"], refunded["payment_amount"]) == (500, "EUR", 1500)
    subscription_events = [e for e in envelopes if e["subject"] == f"subscription/{subscription.pk}"]
    assert sorted(int(e["sequence"]) for e in subscription_events) == list(range(1, 8))
    cancelled = next(e for e in envelopes if e["type"] == "subscription.cancelled")
    assert (cancelled["actortype"], cancelled["actorid"]) == ("staff", str(finance.pk))
    created = next(e for e in envelopes if e["type"] == "subscription.created")
    assert (created["actortype"], created["actorid"][:9]) == ("stripe", "evt_test_")
