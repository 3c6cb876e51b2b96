"""Realistic back-office data, made the way production makes it: a customer buys a plan on the
Stripe stand-in's checkout page, Stripe's events arrive signed at our endpoint and are processed
(dj-stripe's mirror rows, our subscription, its first charge, entitlements), and a one-time payment
is paid and partly refunded by finance."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from billing.catalog.tests.factories import (
    FeatureFactory,
    PlanFactory,
    PlanFeatureFactory,
    PriceFactory,
    PricingZoneFactory,
    ZoneCountryFactory,
    ZonePriceFactory,
)
from billing.models import Feature, Payment
from billing.payments.services import payment_create, refund_create
from billing.stripe import gateway as stripe_gateway
from billing.stripe.tests.events import deliver, event
from devtools.testing import StandinServer
from entitlements.tests.factories import EntitlementFactory
from payments_project.accounts.tests.factories import UserFactory
from payments_project.events.services import relay_heartbeat
from subscriptions.checkout.services import checkout_session_create
from subscriptions.dunning.models import DunningAttempt, DunningCase
from subscriptions.dunning.tests.factories import DunningAttemptFactory, DunningCaseFactory
from subscriptions.models import FamilyMember, Subscription
from subscriptions.services import subscription_cancel
from subscriptions.tests.factories import FamilyFactory
from usage.services import UsageEvent, usage_events_record

Capture = Callable[..., contextlib.AbstractContextManager[Any]]


def staff(username: str, role: str | None) -> Any:
    """A staff member in `role` (support, finance), or a superuser when role is None."""
    user = UserFactory(username=username, is_staff=True, is_superuser=role is None)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def catalog() -> dict[str, Any]:
    """Pro, monthly with a PDF-export feature and a project limit, priced in EUR, JPY and KWD;
    a Eurozone (FR), a Japan zone (JP) and a Gulf zone (KW) with an explicit price."""
    pro = PlanFactory(code="pro", name="Pro", trial_days=0)
    export = FeatureFactory(code="export_pdf", name="PDF export")
    projects = FeatureFactory(code="projects", name="Projects", kind="limit", unit="projects")
    PlanFeatureFactory(plan=pro, feature=export)
    PlanFeatureFactory(plan=pro, feature=projects, limit=50)
    PriceFactory(plan=pro, currency="EUR", amount=899)
    PriceFactory(plan=pro, currency="JPY", amount=14800)
    PriceFactory(plan=pro, currency="KWD", amount=3000)
    eurozone = PricingZoneFactory(code="eurozone", name="Eurozone", currency="EUR")
    ZoneCountryFactory(zone=eurozone, country="FR")
    japan = PricingZoneFactory(code="japan", name="Japan", currency="JPY")
    ZoneCountryFactory(zone=japan, country="JP")
    gulf = PricingZoneFactory(code="gulf", name="Gulf", currency="KWD", multiplier=Decimal("1"))
    ZoneCountryFactory(zone=gulf, country="KW")
    ZonePriceFactory(zone=gulf, plan=pro, amount=6000)
    return {"pro": pro, "eurozone": eurozone, "japan": japan, "gulf": gulf}


def pay_on_checkout_page(standin: StandinServer, session_id: str, card: str = "4242424242424242") -> None:
    request = urllib.request.Request(
        f"{standin.url}/_dev/checkout/{session_id}/complete",
        data=json.dumps({"card": card}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).read()


def deliver_all(client: Client, events: list[dict[str, Any]], capture: Capture | None) -> None:
    """Deliver signed events to our endpoint; with `capture`, run the processing queued on commit."""
    for payload in events:
        with capture(execute=True) if capture else contextlib.nullcontext():
            response = deliver(client, payload)
            assert response.status_code == 200, response.content


def subscribe(
    client: Client,
    standin: StandinServer,
    capture: Capture | None,
    *,
    user: Any,
    plan_code: str = "pro",
    country: str = "FR",
) -> dict[str, Any]:
    """`user` buys `plan_code` on the checkout page; Stripe's events are delivered and processed."""
    session = checkout_session_create(
        user=user,
        plan_code=plan_code,
        country=country,
        zone_code=None,
        success_url="https://example.com/ok",
        cancel_url="https://example.com/no",
    )
    pay_on_checkout_page(standin, session["id"])
    sdk = stripe_gateway.client()
    completed = sdk.v1.checkout.sessions.retrieve(session["id"])
    remote = sdk.v1.subscriptions.retrieve(completed.subscription)
    invoice = sdk.v1.invoices.retrieve(remote.latest_invoice)
    created = int(remote.created)
    events = [
        event("checkout.session.completed", completed, created=created),
        event("customer.subscription.created", remote, created=created),
        event("invoice.payment_succeeded", invoice, created=created + 1),
    ]
    deliver_all(client, events, capture)
    return {"stripe_subscription_id": remote.id, "invoice": invoice, "events": events}


def one_time_payment(*, user: Any, amount: int = 1500, currency: str = "EUR") -> Payment:
    return payment_create(user=user, amount=amount, currency=currency, payment_method="pm_card_visa")


def world(client: Client, standin: StandinServer, capture: Capture | None) -> dict[str, Any]:
    """A catalog; Alice subscribed to Pro in France; a €15.00 one-time payment of hers of which
    finance refunded €7.50; finance, support and a superuser."""
    plans = catalog()
    finance = staff("fin", "finance")
    alice = UserFactory(username="alice", email="alice@example.com", first_name="Alice", last_name="Martin")
    bought = subscribe(client, standin, capture, user=alice)
    payment = one_time_payment(user=alice)
    refund = refund_create(
        payment_id=payment.pk, amount=750, reason="requested_by_customer", staff_user=finance
    )
    # Stripe then tells us about the refund (it lands in dj-stripe's mirror and on our row).
    sdk = stripe_gateway.client()
    remote_refund = sdk.v1.refunds.retrieve(str(refund.stripe_refund_id))
    charge = sdk.v1.charges.retrieve(remote_refund.charge)
    deliver_all(client, [event("charge.refunded", charge)], capture)
    # Alice asks to cancel at the period end: a Stripe change recorded, sent and applied.
    subscription_cancel(subscription=Subscription.objects.get(user=alice), actor=alice)
    # An outbox relay reported in (its heartbeat is an admin page too).
    relay_heartbeat(relay_id="relay-1", state="publishing", started_at=timezone.now(), published=3, errors=0)
    bob = UserFactory(username="bob", email="bob@example.com")
    family = FamilyFactory(owner=alice, name="The Martins")
    FamilyMember.objects.create(family=family, user=bob)
    return {
        **plans,
        "alice": alice,
        "bob": bob,
        "family": family,
        "finance": finance,
        "support": staff("agent", "support"),
        "root": staff("root", None),
        "payment": Payment.objects.get(pk=payment.pk),
        **bought,
    }


def usage_and_dunning(data: dict[str, Any]) -> dict[str, Any]:
    """On top of `world`: Alice used 3 of her 50 projects and 120 of 1,000 API calls this billing
    period; her renewal failed on 1 March 2027 (€8.99 past due, the first retry failed with
    insufficient funds, the second due on 4 March), and an older case was recovered."""
    alice = data["alice"]
    subscription = Subscription.objects.get(user=alice)
    api_calls = FeatureFactory(code="api_calls", name="API calls", kind=Feature.Kind.METERED, unit="calls")
    EntitlementFactory(
        user=alice,
        feature=api_calls,
        plan=data["pro"],
        subscription=subscription,
        source="subscription",
        limit=1000,
        reset_period="billing_period",
    )
    usage_events_record(
        events=[
            UsageEvent(user_id=alice.pk, feature="projects", idempotency_key="p1", quantity=3),
            UsageEvent(user_id=alice.pk, feature="api_calls", idempotency_key="c1", quantity=120),
        ]
    )
    opened = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    case = DunningCaseFactory(
        subscription=subscription,
        stripe_invoice_id="in_renewal_march",
        stripe_customer_id=data["payment"].stripe_customer_id,
        amount_due=899,
        currency="EUR",
        opened_at=opened,
        cancel_at=opened + timedelta(days=14),
        failed_retries=1,
        last_decline_code="insufficient_funds",
    )
    DunningAttemptFactory(
        case=case,
        number=1,
        status=DunningAttempt.Status.FAILED,
        due_at=opened + timedelta(days=1),
        finished_at=opened + timedelta(days=1, minutes=1),
        decline_code="insufficient_funds",
    )
    DunningAttemptFactory(case=case, number=2, due_at=opened + timedelta(days=3))
    recovered = DunningCaseFactory(
        subscription=subscription,
        stripe_invoice_id="in_renewal_january",
        amount_due=899,
        currency="EUR",
        stage=DunningCase.Stage.RECOVERED,
        opened_at=opened - timedelta(days=59),
        cancel_at=opened - timedelta(days=45),
        closed_at=opened - timedelta(days=58),
        close_reason="paid",
        recovered_amount=899,
    )
    return {"subscription": subscription, "case": case, "recovered_case": recovered}
