"""Stripe's webhook endpoint: dj-stripe's verification, then our inbox instead of inline work.

Same URL as dj-stripe's (`/djstripe/webhook/<uuid>/`): the delivery is stored as dj-stripe's
WebhookEventTrigger and verified by it (signature and timestamp tolerance of the endpoint row),
then recorded once per Stripe event id and processed by a Celery task. The response never waits
for Stripe or for our processing.
"""

from __future__ import annotations

import logging
import time
from uuid import UUID

import stripe
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from djstripe.models import WebhookEndpoint, WebhookEventTrigger
from djstripe.models.webhooks import get_remote_ip

from billing.stripe.services import stripe_event_accept
from payments_project.api import STRIPE_ID_MAX_LENGTH, error_body
from payments_project.security import json_loads, nul_path

logger = logging.getLogger(__name__)


@sensitive_variables("signature", "endpoint")
def _verified(body: str, signature: str, endpoint: WebhookEndpoint) -> bool:
    """Stripe's scheme, as dj-stripe's `verify_signature` method (HMAC-SHA256 of "{t}.{body}" with
    the endpoint's secret, t within the endpoint's tolerance), plus the shape of an event.

    Timestamps more than the tolerance away are refused on both sides (Stripe's own check only
    refuses old ones). Done here rather than by WebhookEventTrigger.validate, which crashes (500)
    on a JSON body that is not an object and, with DEBUG on, lets an `X-Djstripe-Webhook-Secret`
    header replace the secret: anyone reaching a development server could then forge events.
    """
    try:
        stripe.WebhookSignature.verify_header(body, signature, endpoint.secret, endpoint.djstripe_tolerance)
    except stripe.SignatureVerificationError:
        return False
    if _signed_at(signature) > time.time() + endpoint.djstripe_tolerance:
        # Stripe's check refuses only old timestamps; one from the future is refused alike (a
        # replay signed ahead of time would otherwise stay valid until that time plus tolerance).
        return False
    try:
        event = json_loads(body)
    except ValueError:
        return False
    return (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and len(event["id"]) <= STRIPE_ID_MAX_LENGTH
        and "livemode" in event
        and _timestamps_in_range(event)
        and nul_path(event) is None  # PostgreSQL's jsonb holds no NUL
    )


# Every Unix time Stripe sends is a real date: one past 2200 (or before 1970) is forged or broken,
# and would overflow Python's datetime (year 9999) somewhere in the processing.
_LATEST_TIMESTAMP = 7_258_118_400  # 2200-01-01
_TIMESTAMP_KEYS = frozenset(
    {
        "created",
        "date",
        "start_date",
        "trial_start",
        "trial_end",
        "current_period_start",
        "current_period_end",
        "cancel_at",
        "billing_cycle_anchor",
        "period_start",
        "period_end",
        "due_date",
        "next_payment_attempt",
        "available_on",
        "arrival_date",
        "start",
        "end",
    }
)


def _timestamps_in_range(value: object, key: str = "") -> bool:
    """Every integer under a key Stripe uses for a Unix time lies between 1970 and 2200."""
    if isinstance(value, dict):
        return all(_timestamps_in_range(item, str(name)) for name, item in value.items())
    if isinstance(value, list):
        return all(_timestamps_in_range(item, key) for item in value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (key in _TIMESTAMP_KEYS or key.endswith("_at"))
    ):
        return 0 <= value <= _LATEST_TIMESTAMP
    return True


def _signed_at(signature: str) -> int:
    """The `t=` timestamp of a Stripe-Signature header (verify_header has checked it exists)."""
    for item in signature.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return 0


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(transaction.non_atomic_requests, name="dispatch")
class StripeEventView(View):
    http_method_names = ["post"]

    @method_decorator(sensitive_variables("endpoint", "trigger"))
    def post(self, request: HttpRequest, uuid: UUID) -> JsonResponse:
        if "stripe-signature" not in request.headers:
            # Nothing is stored for an unsigned request: it cannot be from Stripe.
            return JsonResponse(
                error_body("missing_signature", "Stripe-Signature header is required."), status=400
            )
        endpoint = get_object_or_404(WebhookEndpoint, djstripe_uuid=uuid)
        try:
            body = request.body.decode(request.encoding or "utf-8")
        except UnicodeDecodeError:
            body = "(error decoding body)"
        valid = _verified(body, request.headers["stripe-signature"], endpoint)
        # The delivery's record and the inbox row commit together: one commit per webhook.
        with transaction.atomic():
            trigger = WebhookEventTrigger.objects.create(
                headers=dict(request.headers),
                body=body,
                remote_ip=get_remote_ip(request),
                webhook_endpoint=endpoint,
                stripe_trigger_account=endpoint.djstripe_owner_account,
                valid=valid,
            )
            if valid:
                stripe_event_accept(trigger=trigger)
        if not trigger.valid:
            logger.warning("refused webhook delivery %s: signature or body invalid", trigger.pk)
            return JsonResponse(
                error_body("invalid_webhook", "Signature, timestamp or body is invalid."), status=400
            )
        return JsonResponse({"received": True, "event": trigger.json_body.get("id")})
