"""Dunning driven by Stripe's events through our real webhook URL, signed as Stripe signs them; the
objects inside are the stand-in's, as Stripe sends them (the invoice names its payment intent, the
card's codes are on the intent only)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import stripe
from django.test import Client

from billing.models import StripeEvent
from billing.stripe.tests.events import deliver, event
from devtools import standin_clock
from subscriptions.dunning.models import DunningCase
from subscriptions.dunning.tests.conftest import Renewal
from subscriptions.dunning.tests.factories import DunningPolicyFactory
from subscriptions.models import Subscription, SubscriptionHistory

pytestmark = pytest.mark.django_db(transaction=True)


def _deliver(client: Client, type: str, obj: stripe.StripeObject) -> None:
    payload = event(type, obj)
    assert deliver(client, payload).status_code == 200
    assert StripeEvent.objects.get(stripe_event_id=payload["id"]).status == "done"


def test_a_stolen_card_in_the_signed_payment_failed_event_opens_the_case_with_no_retry(
    client: Client, failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    # given a renewal declined as stolen, "do not try again"; the invoice Stripe sends carries
    # the payment intent's id, not its error
    renewal = failed_renewal(decline_later={"decline_code": "stolen_card", "advice_code": "do_not_try_again"})
    invoice = stripe_client.v1.invoices.retrieve(renewal.invoice_id)
    assert isinstance(invoice.payment_intent, str)
    # when Stripe sends invoice.payment_failed
    _deliver(client, "invoice.payment_failed", invoice)
    # then the case opened knowing the card is stolen: every retry skipped, a new card asked for,
    # the subscription suspended at once
    case = DunningCase.objects.get(stripe_invoice_id=renewal.invoice_id)
    assert (case.last_decline_code, case.last_advice_code, case.needs_new_card) == (
        "stolen_card",
        "do_not_try_again",
        True,
    )
    assert list(case.attempts.order_by("number").values_list("status", flat=True)) == ["skipped"] * 4
    assert (case.stage, Subscription.objects.get(pk=renewal.subscription.pk).status) == (
        "suspended",
        "suspended",
    )
    # and Stripe was read, never asked to charge the card
    assert [entry for entry in standin_clock.requests_log() if entry[0] == "POST"] == []


def test_stripe_saying_past_due_leaves_a_dunning_suspension_in_place(
    client: Client, failed_renewal: Callable[..., Renewal], stripe_client: stripe.StripeClient
) -> None:
    # given a renewal whose plan's policy suspends at the first failure, delivered by Stripe
    renewal = failed_renewal()
    DunningPolicyFactory(plan=renewal.subscription.plan, suspend_after_failed_retries=0)
    _deliver(client, "invoice.payment_failed", stripe_client.v1.invoices.retrieve(renewal.invoice_id))
    subscription = Subscription.objects.get(pk=renewal.subscription.pk)
    assert subscription.status == "suspended"
    # when Stripe sends customer.subscription.updated saying past_due (it has no "suspended")
    remote = stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id)
    assert remote.status == "past_due"
    _deliver(client, "customer.subscription.updated", remote)
    # then the subscription stays suspended with its case, and no change was recorded after it
    subscription.refresh_from_db()
    case = DunningCase.objects.get(stripe_invoice_id=renewal.invoice_id)
    assert (subscription.status, case.stage) == ("suspended", "suspended")
    last = SubscriptionHistory.objects.filter(subscription=subscription).order_by("-pk").first()
    assert last is not None
    assert (last.to_status, last.cause) == ("suspended", "dunning")
