"""The one door to Stripe: every call goes through `call()`, behind one circuit breaker.

The SDK retries transient failures itself (`max_network_retries`, with backoff, reusing the
idempotency key), each request has a timeout, and writes carry an idempotency key derived from our
own rows. The breaker (pybreaker) counts only outages (connection errors, Stripe 5xx): a declined
card is an answer, not an outage. Entitlement checks never come here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pybreaker
import stripe
from django.conf import settings
from prometheus_client import Gauge

from payments_project.errors import DomainError, ServiceUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

_STATE_VALUES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}
circuit_breaker_state = Gauge(
    "circuit_breaker_state",
    "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
    ["name"],
)


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError))


class _StateToMetric(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        if old_state is not None and old_state.name == new_state.name:
            return
        logger.warning("stripe circuit breaker %s -> %s", getattr(old_state, "name", None), new_state.name)
        circuit_breaker_state.labels(name=cb.name).set(_STATE_VALUES[new_state.name])


breaker = pybreaker.CircuitBreaker(
    name="stripe",
    fail_max=settings.STRIPE_BREAKER_FAIL_MAX,
    reset_timeout=settings.STRIPE_BREAKER_RESET_SECONDS,
    exclude=[lambda exc: not _is_outage(exc)],
    listeners=[_StateToMetric()],
)
circuit_breaker_state.labels(name="stripe").set(0)


class StripeUnavailable(ServiceUnavailable):
    code = "stripe_unavailable"


class PaymentDeclined(DomainError):
    status_code = 402
    code = "card_declined"


@functools.cache
def client() -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
    )


def configure_sdk_globals() -> None:
    """dj-stripe calls the SDK's module-level API: point it at the same Stripe as our client."""
    stripe.api_base = settings.STRIPE_API_BASE
    stripe.max_network_retries = settings.STRIPE_MAX_NETWORK_RETRIES
    stripe.default_http_client = stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS)


def breaker_state() -> str:
    return str(breaker.current_state)


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one SDK call behind the breaker and turn Stripe's errors into our error format."""
    try:
        return breaker.call(fn, *args, **kwargs)
    except pybreaker.CircuitBreakerError:
        raise StripeUnavailable(
            "Stripe is unavailable; try again shortly.",
            headers={"Retry-After": str(settings.STRIPE_BREAKER_RESET_SECONDS)},
        ) from None
    except stripe.CardError as exc:
        error = exc.error
        raise PaymentDeclined(
            exc.user_message or "The card was declined.",
            extra={"decline_code": str(getattr(error, "decline_code", None) or exc.code or "card_declined")},
        ) from exc
    except stripe.InvalidRequestError as exc:
        raise DomainError(
            exc.user_message or "Stripe refused the request.", code="stripe_invalid_request"
        ) from exc
    except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as exc:
        raise StripeUnavailable(
            "Stripe did not answer; try again shortly.", headers={"Retry-After": "5"}
        ) from exc
    except stripe.StripeError as exc:
        logger.error("unexpected Stripe error: %s", exc)
        raise DomainError("Stripe refused the request.", code="stripe_error", status_code=502) from exc
