"""Signed Stripe webhook deliveries taken before the middleware they never use."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from billing.stripe.views import delivery_body, delivery_remote_ip
from billing.stripe.wsgi import VIEW_NAME, endpoint_delivery_record, webhook_path_pattern
from payments_project.observability import early_answer_count
from payments_project.security import database_refusal_response


class StripeWebhookFastPathMiddleware:
    """Takes POSTs to the webhook URL that carry a delivery verifying against its endpoint: the
    same functions as the view (billing.stripe.views.delivery_record), the same 200 answer.

    Most deliveries are taken before Django's handler by billing.stripe.wsgi; this takes those it
    hands on that still verify (a script prefix, a query string, another charset, a connection
    that had to be checked) and those of servers that do not load payments_project.wsgi.

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

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method == "POST" and "stripe-signature" in request.headers:
            match = webhook_path_pattern().match(request.path_info)
            if match is not None:
                start = time.perf_counter()
                response: HttpResponseBase | None
                try:
                    event_id = endpoint_delivery_record(
                        UUID(match.group(1)),
                        body=delivery_body(request),
                        signature=request.headers["stripe-signature"],
                        headers=dict(request.headers),
                        remote_ip=delivery_remote_ip(request),
                    )
                    response = (
                        None if event_id is None else JsonResponse({"received": True, "event": event_id})
                    )
                except (DataError, IntegrityError) as exc:
                    # As the view's would be (InputGuardMiddleware.process_exception).
                    response = database_refusal_response(exc)
                except (OperationalError, InterfaceError) as exc:
                    # The database is unreachable (Django's health check already replaced a dead
                    # connection): 503 with Retry-After, as the API and the WSGI layer answer it.
                    response = database_refusal_response(exc)
                if response is not None:
                    early_answer_count(VIEW_NAME, "POST", response.status_code, time.perf_counter() - start)
                    return response
        return self.get_response(request)
