"""Stripe's webhook endpoint: dj-stripe's verification, then our inbox instead of inline work.

Same URL as dj-stripe's (`/djstripe/webhook/<uuid>/`): the delivery is stored as dj-stripe's
WebhookEventTrigger and verified by it (signature and timestamp tolerance of the endpoint row),
then recorded once per Stripe event id and processed by a Celery task. The response never waits
for Stripe or for our processing.
"""

from __future__ import annotations

import json
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
from djstripe.models import WebhookEndpoint, WebhookEventTrigger
from djstripe.models.webhooks import get_remote_ip

from billing.stripe.services import stripe_event_accept
from payments_project.api import error_body

logger = logging.getLogger(__name__)


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
        event = json.loads(body)
    except ValueError:
        return False
    return isinstance(event, dict) and isinstance(event.get("id"), str) and "livemode" in event


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
