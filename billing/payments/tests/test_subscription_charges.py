"""Charges Stripe makes for subscriptions: recorded as payments from the invoice events, listed with
one-time payments and refunded through the same flow (finance only, pending first, never twice)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from billing.catalog.services import PushItem, stripe_price_ensure
from billing.catalog.tests.factories import PlanFactory
from billing.models import Payment, Refund
from billing.payments.services import RefundRefused, customer_ensure, payment_create, refund_create
from billing.payments.services.refunds import refund_submit
from billing.stripe import gateway as stripe_gateway
from billing.stripe.tests.events import deliver, event
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory


def _paid_invoice(user: Any, *, currency: str = "EUR", amount: int = 899) -> Any:
    """A Stripe subscription of `user` whose first invoice the stand-in charged to a test card."""
    sdk = stripe_gateway.client()
    customer = customer_ensure(user=user)
    method = sdk.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    sdk.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": method.id}})
    plan = PlanFactory(code=f"pro_{currency.lower()}")
    price = stripe_price_ensure(item=PushItem(plan, currency, amount))
    # The metadata our checkout gives a subscription (the subscriptions app reads it too).
    metadata = {"user_id": str(user.pk), "plan_code": plan.code}
    remote = sdk.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price.stripe_price_id}], "metadata": metadata}
    )
    return sdk.v1.invoices.retrieve(remote.latest_invoice)


def _deliver(client: Client, capture: Any, payload: dict[str, Any]) -> None:
    with capture(execute=True):
        assert deliver(client, payload).status_code == 200


@pytest.fixture
def finance() -> Any:
    user = UserFactory(username="fin", is_staff=True)
    user.groups.add(Group.objects.get(name="finance"))
    return user


@pytest.fixture
def charged(
    client: Client, stripe_standin: StandinServer, django_capture_on_commit_callbacks: Any
) -> dict[str, Any]:
    user = UserFactory(username="subscriber")
    invoice = _paid_invoice(user)
    _deliver(client, django_capture_on_commit_callbacks, event("invoice.payment_succeeded", invoice))
    return {"user": user, "invoice": invoice, "payment": Payment.objects.get(kind="subscription")}


@pytest.mark.django_db
def test_a_paid_subscription_invoice_is_recorded_once_as_a_payment(
    client: Client, charged: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    # given the invoice's charge recorded from invoice.payment_succeeded
    invoice = charged["invoice"]

    # when Stripe sends invoice.paid for the same invoice, and the first event again
    _deliver(client, django_capture_on_commit_callbacks, event("invoice.paid", invoice))
    _deliver(client, django_capture_on_commit_callbacks, event("invoice.payment_succeeded", invoice))

    # then one payment of kind subscription, with the invoice's amount, intent and charge
    row = Payment.objects.get()
    assert (row.kind, row.user, row.amount, row.currency, row.status) == (
        "subscription",
        charged["user"],
        899,
        "EUR",
        "succeeded",
    )
    assert (row.stripe_invoice_id, row.stripe_subscription_id) == (invoice.id, invoice.subscription)
    assert row.stripe_payment_intent_id == invoice.payment_intent
    assert row.stripe_charge_id == invoice.charge.id  # the stand-in expands it, as Stripe may
    assert row.refund_state == "not refunded"


@pytest.mark.django_db
def test_an_unpaid_or_zero_invoice_is_not_a_payment(
    client: Client, stripe_standin: StandinServer, django_capture_on_commit_callbacks: Any
) -> None:
    invoice = _paid_invoice(UserFactory(username="trial")).to_dict()
    for payload in (dict(invoice, amount_paid=0), dict(invoice, status="open")):
        _deliver(client, django_capture_on_commit_callbacks, event("invoice.payment_failed", payload))
    assert Payment.objects.count() == 0


@pytest.mark.django_db
def test_finance_refunds_part_of_a_subscription_charge_pending_first_and_never_twice(
    charged: dict[str, Any], finance: Any
) -> None:
    # given the 8.99 EUR subscription charge
    payment = charged["payment"]

    # when finance refunds 2.50, the refund is sent again, and then 7.00 more is asked
    refund = refund_create(
        payment_id=payment.pk, amount=250, reason="requested_by_customer", staff_user=finance
    )
    again = refund_submit(refund_id=refund.pk)
    with pytest.raises(RefundRefused) as refused:
        refund_create(payment_id=payment.pk, amount=700, reason="duplicate", staff_user=finance)

    # then one refund of 2.50 at Stripe on the invoice's charge, and 6.49 left
    assert (refund.amount, refund.status, again.stripe_refund_id) == (
        250,
        "succeeded",
        refund.stripe_refund_id,
    )
    assert refused.value.code == "over_refund"
    assert refused.value.message == "Only €6.49 is left to refund (asked €7.00)."
    remote = stripe_gateway.client().v1.refunds.list({"charge": payment.stripe_charge_id})
    assert [r.amount for r in remote.data] == [250]
    payment.refresh_from_db()
    assert (payment.refund_state, payment.display_left_to_refund) == (
        "partially refunded €2.50 of €8.99",
        "€6.49",
    )


@pytest.mark.django_db
def test_a_subscription_charge_cannot_revoke_features_through_a_refund(
    charged: dict[str, Any], finance: Any
) -> None:
    with pytest.raises(RefundRefused) as refused:
        refund_create(
            payment_id=charged["payment"].pk,
            amount=None,
            reason="duplicate",
            staff_user=finance,
            revoke_entitlements=True,
        )
    assert refused.value.code == "revoke_not_for_subscriptions"
    assert Refund.objects.count() == 0


@pytest.mark.django_db
def test_finance_refunds_a_subscription_charge_typed_in_real_units_in_the_admin(
    charged: dict[str, Any], finance: Any, client: Client
) -> None:
    # given finance on the refund page of the subscription charge
    client.force_login(finance)
    url = f"/admin/billing/payment/{charged['payment'].pk}/refund/"
    page = client.get(url).content.decode()

    # when they type 2.505 (refused), then 2.50
    refused = client.post(url, {"amount": "2.505", "reason": "requested_by_customer"})
    done = client.post(url, {"amount": "2.50", "reason": "requested_by_customer"})

    # then only the second went through, for 250 cents; features are not offered to revoke
    assert "revoke_entitlements" not in page
    assert "EUR has 2 decimals; 2.505 has 3. Nothing is rounded." in refused.content.decode()
    assert done.status_code == 302
    assert list(Refund.objects.values_list("amount", "currency", "status")) == [(250, "EUR", "succeeded")]


@pytest.mark.django_db
def test_subscription_charges_are_listed_with_one_time_payments(
    charged: dict[str, Any], finance: Any, client: Client
) -> None:
    # given a one-time payment of the same customer next to the subscription charge
    payment_create(user=charged["user"], amount=1500, currency="EUR", payment_method="pm_card_visa")
    client.force_login(finance)

    # when finance opens the payments list, filtered by kind
    everything = client.get("/admin/billing/payment/").content.decode()
    subscriptions_only = client.get("/admin/billing/payment/?kind__exact=subscription").context["cl"]

    # then both are there with their amounts in the currency's format
    assert "Subscription charge" in everything and "One-time payment" in everything
    assert "€8.99" in everything and "€15.00" in everything
    assert [p.kind for p in subscriptions_only.result_list] == ["subscription"]
