"""Deliver Stripe-shaped events to our real webhook URL, signed the way Stripe signs them.

Event envelopes follow Stripe's `event` object (stripe/openapi fixtures3.json), trimmed to the
fields the code reads; the object inside is what the stand-in returns for it through the SDK.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import stripe
from django.test import Client
from djstripe.models import WebhookEndpoint

from billing.stripe.services import webhook_endpoint_ensure

SECRET = "whsec_test_webhooks"
_ids = itertools.count(1)


def endpoint() -> WebhookEndpoint:
    return webhook_endpoint_ensure(secret=SECRET, base_url="http://testserver")


def event(type: str, obj: Any, *, created: int | None = None, id: str | None = None) -> dict[str, Any]:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    # As on the wire: Stripe sends decimals (e.g. unit_amount_decimal) as strings.
    data = json.loads(json.dumps(data, default=str))
    return {
        "id": id or f"evt_test_{int(time.time())}_{next(_ids)}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created or int(time.time()),
        "data": {"object": data, "previous_attributes": {}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }


def deliver(
    client: Client,
    payload: dict[str, Any] | str,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    signed: bool = True,
    **extra: str,
) -> Any:
    ep = endpoint()
    body = payload if isinstance(payload, str) else json.dumps(payload)
    headers = {}
    if signed:
        t = int(time.time()) if timestamp is None else timestamp
        signature = stripe.WebhookSignature._compute_signature(f"{t}.{body}", secret)
        headers["HTTP_STRIPE_SIGNATURE"] = f"t={t},v1={signature}"
    return client.post(
        f"/djstripe/webhook/{ep.djstripe_uuid}/",
        data=body,
        content_type="application/json",
        **headers,
        **extra,
    )
