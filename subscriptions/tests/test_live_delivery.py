"""The whole purchase with nothing played by the test: our API opens a checkout, the stand-in's
payment page is paid, and the stand-in itself delivers its signed events to our running server."""

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from billing.catalog.tests.factories import FeatureFactory, PlanFactory, PlanFeatureFactory, PriceFactory
from billing.models import StripeEvent
from billing.stripe.services import webhook_endpoint_ensure
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory
from subscriptions.models import Subscription

SECRET = "whsec_live_delivery"


@pytest.fixture
def delivering(stripe_standin: StandinServer, live_server: Any) -> Iterator[str]:
    """The stand-in told to deliver its webhooks to the live test server's endpoint."""
    endpoint = webhook_endpoint_ensure(secret=SECRET, base_url=live_server.url)
    # Events earlier tests scheduled (sent ~1 s after their call) must not reach this server.
    time.sleep(1.5)
    request = urllib.request.Request(
        f"{stripe_standin.url}/_config/webhooks/live",
        data=f"url={endpoint.url}&secret={SECRET}".encode(),
        headers={"Authorization": "Bearer sk_test_x"},
    )
    urllib.request.urlopen(request, timeout=5).read()
    yield live_server.url
    urllib.request.urlopen(
        urllib.request.Request(f"{stripe_standin.url}/_config/webhooks/live", method="DELETE"), timeout=5
    ).read()


def _call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.django_db(transaction=True)
def test_a_paid_checkout_entitles_the_buyer_through_the_stand_ins_own_webhooks(
    stripe_standin: StandinServer, delivering: str
) -> None:
    # given a plan with a feature and a customer with an API token
    plan = PlanFactory(code="pro")
    PriceFactory(plan=plan, currency="USD", amount=999)
    PlanFeatureFactory(plan=plan, feature=FeatureFactory(code="export_pdf"))
    buyer = UserFactory(username="buyer")
    token = Token.objects.create(user=buyer).key  # type: ignore[misc]

    # when the customer opens a checkout through our API and pays on the stand-in's page
    session = _call(
        "POST",
        f"{delivering}/api/v1/checkout-sessions/",
        token,
        {
            "plan": "pro",
            "success_url": f"{delivering}/health/live",
            "cancel_url": f"{delivering}/health/live",
        },
    )
    pay = urllib.request.Request(
        f"{stripe_standin.url}/_dev/checkout/{session['id']}/complete",
        data=json.dumps({"card": "4242424242424242"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(pay, timeout=10).read()

    # then, once Stripe's events have arrived and been processed, the feature is allowed
    # (events arrive one by one: wait for the last to finish too, not only for the grant)
    deadline = time.monotonic() + 30
    check: dict[str, Any] = {}
    while time.monotonic() < deadline:
        check = _call("GET", f"{delivering}/api/v1/entitlements/check?feature=export_pdf", token)
        unfinished = StripeEvent.objects.exclude(status=StripeEvent.Status.DONE).exists()
        if check["allowed"] and not unfinished:
            break
        time.sleep(0.3)
    assert (check["allowed"], check["reason"], check["plan"]) == (True, "granted", "pro")
    assert Subscription.objects.get().status == "active"
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"done"}
    assert {"checkout.session.completed", "customer.subscription.created"} <= set(
        StripeEvent.objects.values_list("type", flat=True)
    )
