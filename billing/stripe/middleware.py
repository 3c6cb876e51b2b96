"""Signed Stripe webhook deliveries taken before the middleware they never use."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from uuid import UUID

from django.conf import settings
from django.db import DataError, IntegrityError
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.urls import get_script_prefix, reverse
from django.views.decorators.debug import sensitive_variables
from djstripe.models import WebhookEndpoint

from billing.stripe.views import EndpointChanged, delivery_take
from payments_project.observability import early_answer_count
from payments_project.security import database_refusal_response

VIEW_NAME = "djstripe:djstripe_webhook_by_uuid"
_ZERO = UUID(int=0)
# Django's uuid path converter's pattern.
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# Per process: endpoint uuid -> (secret, tolerance) as last read. Never trusted alone: the write
# records nothing unless the row still has them (EndpointChanged), so a changed secret is read
# again and a deleted endpoint answered by the view (404).
_endpoints: dict[UUID, tuple[str, int]] = {}


class StripeWebhookFastPathMiddleware:
    """Takes POSTs to the webhook URL that carry a delivery verifying against its endpoint: the
    same functions as the view (billing.stripe.views.delivery_take), the same 200 answer.

    Sits where the entitlement hot path does: after the input guard (body size, NUL, nesting),
    Security, WhiteNoise, Common (ALLOWED_HOSTS) and XFrameOptions, before the Stripe budget,
    Session, CSRF, Authentication, OTP, Messages, PrometheusAfter and Axes, and before URL
    resolution: a webhook uses none of them (the view is CSRF-exempt and anonymous), and they were
    most of its CPU. It counts its answers in django-prometheus's series as PrometheusAfter would.

    Anything else (no signature, an unknown endpoint, a delivery that does not verify) goes on
    to the view, which answers and records it exactly as if this middleware were absent.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self._paths: dict[str, re.Pattern[str]] = {}  # per URLconf and script prefix

    def _path_get(self) -> re.Pattern[str]:
        key = f"{settings.ROOT_URLCONF}:{get_script_prefix()}"
        pattern = self._paths.get(key)
        if pattern is None:
            prefix = get_script_prefix()
            path = "/" + reverse(VIEW_NAME, kwargs={"uuid": _ZERO})[len(prefix) :]
            before, after = path.split(str(_ZERO))
            pattern = self._paths[key] = re.compile(f"{re.escape(before)}({_UUID}){re.escape(after)}\\Z")
        return pattern

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method == "POST" and "stripe-signature" in request.headers:
            match = self._path_get().match(request.path_info)
            if match is not None:
                start = time.perf_counter()
                try:
                    response = _take(request, UUID(match.group(1)))
                except (DataError, IntegrityError) as exc:
                    # As the view's would be (InputGuardMiddleware.process_exception).
                    response = database_refusal_response(exc)
                if response is not None:
                    early_answer_count(VIEW_NAME, "POST", response.status_code, time.perf_counter() - start)
                    return response
        return self.get_response(request)


@sensitive_variables("endpoint")
def _take(request: HttpRequest, uuid: UUID) -> JsonResponse | None:
    endpoint = _endpoints.get(uuid)
    if endpoint is None:
        endpoint = (
            WebhookEndpoint.objects.filter(djstripe_uuid=uuid)
            .values_list("secret", "djstripe_tolerance")
            .first()
        )
        if endpoint is None:
            return None
        _endpoints[uuid] = endpoint
    try:
        response = delivery_take(request, endpoint_uuid=uuid, secret=endpoint[0], tolerance=endpoint[1])
    except EndpointChanged:
        response = None
    if response is None:
        # Read again next time: the view answers this one from the row as it is now.
        _endpoints.pop(uuid, None)
    return response
