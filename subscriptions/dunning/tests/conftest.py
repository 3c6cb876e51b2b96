"""A failed renewal played by the Stripe stand-in, delivered to our services as the webhook would."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import requests
import stripe
from django.apps import apps as django_apps
from django.utils import timezone

from billing.catalog.tests.factories import PlanFactory
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory
from subscriptions.dunning.models import DunningCase
from subscriptions.dunning.services import dunning_invoice_failed
from subscriptions.models import Subscription
from subscriptions.services import subscription_apply_invoice_failed
from subscriptions.tests.factories import SubscriptionFactory


@pytest.fixture
def dunning_seeded(db: None) -> None:
    """The default policy and decline rules of migration 0008 (a transactional test flushed them)."""
    importlib.import_module("subscriptions.migrations.0008_dunning_seed").seed(django_apps, None)


@pytest.fixture
def stripe_client(stripe_standin: StandinServer) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_" + "x" * 24, base_addresses={"api": stripe_standin.url}, max_network_retries=0
    )


@dataclass
class Renewal:
    subscription: Subscription
    invoice_id: str
    customer_id: str
    card: str

    def deliver_failed(self, client: stripe.StripeClient) -> DunningCase | None:
        """What on_invoice_failed does with Stripe's invoice.payment_failed."""
        data = client.v1.invoices.retrieve(self.invoice_id).to_dict()
        subscription_apply_invoice_failed(data=data, event_id="evt_test_failed", event_created=timezone.now())
        return dunning_invoice_failed(data=data, stripe_event_id="evt_test_failed")


@pytest.fixture
def failed_renewal(
    stripe_client: stripe.StripeClient, stripe_standin: StandinServer, dunning_seeded: None
) -> Callable[..., Renewal]:
    def make(*, decline_later: dict[str, str] | None = None, plan_code: str = "pro") -> Renewal:
        client = stripe_client
        product = client.v1.products.create({"name": "Pro"})
        price = client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount": 1500,
                "recurring": {"interval": "month"},
            }
        )
        customer = client.v1.customers.create({"email": "ada@example.com"})
        good = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
        client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": good.id}})
        remote = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
        if decline_later is None:
            card = client.v1.payment_methods.attach(
                "pm_card_chargeCustomerFail", {"customer": customer.id}
            ).id
            client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card}})
        else:
            card = good.id
            requests.post(
                f"{stripe_standin.url}/_dev/payment_methods/{card}/decline_later",
                json=decline_later,
                timeout=5,
            ).raise_for_status()
        answer = requests.post(f"{stripe_standin.url}/_dev/clock/advance", json={"days": 31}, timeout=5)
        (invoice_id,) = answer.json()["invoices"]
        plan = PlanFactory(code=plan_code)
        subscription = SubscriptionFactory(
            user=UserFactory(email="ada@example.com"),
            plan=plan,
            stripe_subscription_id=remote.id,
            currency="USD",
            amount=1500,
        )
        return Renewal(subscription=subscription, invoice_id=invoice_id, customer_id=customer.id, card=card)

    return make
