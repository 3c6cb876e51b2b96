"""Secrets never appear on Django's debug page, whatever frame holds them."""

from typing import Any

import pytest
import stripe
from django.test import Client

from billing.stripe.tests.events import SECRET, deliver


def _boom(*args: Any, **kwargs: Any) -> str:
    raise RuntimeError("crafted failure inside the signature check")


@pytest.mark.django_db
def test_a_debug_page_for_a_crafted_webhook_shows_no_secret(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # given debug pages on, a real-looking Stripe key, and a webhook whose verification fails
    # inside the Stripe SDK (whose frames hold the webhook secret as a local variable)
    settings.DEBUG = True
    settings.STRIPE_SECRET_KEY = "sk_test_REAL_LOOKING_KEY_0123456789abcdef"
    monkeypatch.setattr(stripe.WebhookSignature, "verify_header", staticmethod(_boom))
    client = Client(raise_request_exception=False)

    # when the crafted delivery reaches the endpoint
    response = deliver(client, {"id": "evt_crafted", "livemode": False, "created": 1_700_000_000})

    # then Django's debug page is shown, with the frames' variables, but neither secret
    page = response.content.decode()
    assert response.status_code == 500
    assert "crafted failure inside the signature check" in page
    assert "Local vars" in page
    assert SECRET not in page
    assert "sk_test_REAL_LOOKING_KEY" not in page
    assert "STRIPE_SECRET_KEY" in page  # the setting is listed, its value replaced
