"""Stripe's webhook endpoint: our verification, then our inbox instead of inline work.

Same URL as dj-stripe's (`/djstripe/webhook/<uuid>/`): each delivery is stored as dj-stripe's
WebhookEventTrigger, verified against the endpoint row's secret and tolerance
(billing.stripe.verification), then recorded once per Stripe event id and processed by a Celery
task. The response never waits for Stripe or for our processing. A well-formed delivery is
usually answered before the view, by billing.stripe.middleware, with the same functions below; the
view answers the rest (unsigned, unknown endpoint, refused) and any delivery the fast path left.
"""

from __future__ import annotations

import ipaddress
import logging
from uuid import UUID

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from djstripe.models import WebhookEndpoint, WebhookEventTrigger
from djstripe.models.webhooks import get_remote_ip

from billing.stripe.services import stripe_delivery_accept
from billing.stripe.verification import webhook_event_verified
from payments_project.api import error_body

logger = logging.getLogger(__name__)


class EndpointChanged(Exception):
    """The endpoint's secret or tolerance changed (or it was deleted) since they were read."""


def delivery_body(request: HttpRequest) -> str:
    """The body as dj-stripe stores it."""
    try:
        return request.body.decode(request.encoding or "utf-8")
    except UnicodeDecodeError:
        return "(error decoding body)"


@sensitive_variables("secret", "signature")
def delivery_record(
    *,
    endpoint_uuid: UUID,
    secret: str,
    tolerance: int,
    body: str,
    signature: str,
    headers: dict[str, str],
    remote_ip: str,
) -> str | None:
    """The event id of a signed delivery that verifies against `secret` and `tolerance`, once
    recorded (durably: committed, or in the caller's transaction); None, recording nothing, for
    one that does not verify. EndpointChanged when the endpoint no longer has that secret and
    tolerance: nothing recorded. The one intake of both fast paths (billing.stripe.wsgi,
    billing.stripe.middleware) and the view."""
    event = webhook_event_verified(body, signature, secret=secret, tolerance=tolerance)
    if event is None:
        return None
    if not stripe_delivery_accept(
        endpoint_uuid=endpoint_uuid,
        secret=secret,
        tolerance=tolerance,
        event=event,
        body=body,
        headers=headers,
        remote_ip=remote_ip,
    ):
        raise EndpointChanged
    return str(event["id"])


@sensitive_variables("secret")
def delivery_take(
    request: HttpRequest, *, endpoint_uuid: UUID, secret: str, tolerance: int
) -> JsonResponse | None:
    """delivery_record for a request: the 200 answer once recorded, None when it does not verify."""
    event_id = delivery_record(
        endpoint_uuid=endpoint_uuid,
        secret=secret,
        tolerance=tolerance,
        body=delivery_body(request),
        signature=request.headers["stripe-signature"],
        headers=dict(request.headers),
        remote_ip=delivery_remote_ip(request),
    )
    if event_id is None:
        return None
    return JsonResponse({"received": True, "event": event_id})


def delivery_remote_ip(request: HttpRequest) -> str:
    """The client address dj-stripe stores (the first X-Forwarded-For entry, else the peer's), or
    the peer's when that entry is not an address: the column holds only addresses, and a proxy or
    a client sending anything else there must not make the delivery a 500."""
    return remote_ip_valid(get_remote_ip(request), request.META.get("REMOTE_ADDR", ""))


def remote_ip_valid(address: str | None, peer: str) -> str:
    """`address` when it is an IP address, else `peer` when it is one, else dj-stripe's unknown."""
    for candidate in (address, peer):
        if not candidate:
            continue
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return "0.0.0.0"  # noqa: S104 - dj-stripe's own "unknown", not a bind address


def missing_signature() -> JsonResponse:
    # Nothing is stored for an unsigned request: it cannot be from Stripe.
    return JsonResponse(error_body("missing_signature", "Stripe-Signature header is required."), status=400)


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(transaction.non_atomic_requests, name="dispatch")
class StripeEventView(View):
    http_method_names = ["post"]

    @method_decorator(sensitive_variables("endpoint", "trigger"))
    def post(self, request: HttpRequest, uuid: UUID) -> JsonResponse:
        if "stripe-signature" not in request.headers:
            return missing_signature()
        # Twice at most: an endpoint changed between reading it and recording reads it again.
        for _ in range(2):
            endpoint = get_object_or_404(WebhookEndpoint, djstripe_uuid=uuid)
            try:
                accepted = delivery_take(
                    request, endpoint_uuid=uuid, secret=endpoint.secret, tolerance=endpoint.djstripe_tolerance
                )
            except EndpointChanged:
                continue
            if accepted is not None:
                return accepted
            # Refused deliveries are kept too (staff see what was sent), marked invalid.
            trigger = WebhookEventTrigger.objects.create(
                headers=dict(request.headers),
                body=delivery_body(request),
                remote_ip=delivery_remote_ip(request),
                webhook_endpoint=endpoint,
                stripe_trigger_account=endpoint.djstripe_owner_account,
                valid=False,
            )
            logger.warning("refused webhook delivery %s: signature or body invalid", trigger.pk)
            return JsonResponse(
                error_body("invalid_webhook", "Signature, timestamp or body is invalid."), status=400
            )
        response = JsonResponse(
            error_body("webhook_endpoint_changed", "The endpoint changed while receiving; retry."), status=503
        )
        response["Retry-After"] = "1"
        return response
