"""The one door to Stripe: every call goes through `call()`, behind one circuit breaker.

- **Concurrent.** The breaker (billing/stripe/breaker.py) keeps its lock only for its bookkeeping,
  never during a call: calls from different requests run side by side.
- **One time budget per request.** Everything a request spends waiting for Stripe, retries and
  their back-off included, comes out of STRIPE_REQUEST_BUDGET_SECONDS (`StripeBudgetMiddleware`
  opens one per request; outside a request each call gets its own). Each attempt's timeout is the
  smaller of STRIPE_TIMEOUT_SECONDS and what is left, the SDK's retries (with the same
  idempotency key) stop when too little is left, and a request whose budget is spent answers 503
  with Retry-After at once.
- **Only outages count.** Network errors, timeouts and Stripe 5xx count towards opening the
  breaker (a declined card, an invalid request, a rate limit or a refused key are answers), and what
  we can check ourselves (the idempotency key's length) is refused before any call.
- Writes carry an idempotency key derived from our own rows. Entitlement checks never come here.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import stripe
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.debug import sensitive_variables
from prometheus_client import Gauge

from billing.stripe.breaker import CLOSED, HALF_OPEN, OPEN, BreakerOpen, CircuitBreaker
from payments_project.errors import DomainError, ServiceUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Stripe refuses longer keys with a 400 (https://docs.stripe.com/api/idempotent_requests).
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# An attempt with less time than this left is not started: it could not get an answer.
_MIN_ATTEMPT_SECONDS = 0.05

_STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
circuit_breaker_state = Gauge(
    "circuit_breaker_state",
    "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
    ["name"],
    # Several web workers, one breaker each: the worst of the running ones.
    multiprocess_mode="livemax",
)


def _state_changed(name: str, old: str, new: str) -> None:
    logger.warning("%s circuit breaker %s -> %s", name, old, new)
    circuit_breaker_state.labels(name=name).set(_STATE_VALUES[new])


breaker = CircuitBreaker(
    name="stripe",
    fail_max=settings.STRIPE_BREAKER_FAIL_MAX,
    reset_seconds=settings.STRIPE_BREAKER_RESET_SECONDS,
    on_state_change=_state_changed,
)
circuit_breaker_state.labels(name="stripe").set(0)


class StripeUnavailable(ServiceUnavailable):
    code = "stripe_unavailable"


class PaymentDeclined(DomainError):
    status_code = 402
    code = "card_declined"


# --- the time budget ------------------------------------------------------------------------------


class Budget:
    """Seconds of Stripe time one request may still spend (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds
        self.deadline: float | None = None  # set while a call runs: when this call must stop

    def remaining(self) -> float:
        if self.deadline is None:
            return self.left
        return self.deadline - time.monotonic()


_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("stripe_budget", default=None)


@contextmanager
def budget_scope(seconds: float | None = None) -> Iterator[Budget]:
    """Every Stripe call inside shares one budget (default STRIPE_REQUEST_BUDGET_SECONDS)."""
    budget = Budget(settings.STRIPE_REQUEST_BUDGET_SECONDS if seconds is None else seconds)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


class StripeBudgetMiddleware:
    """One Stripe time budget per request (after the entitlement hot path, which never calls Stripe)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        with budget_scope():
            return self.get_response(request)


class _BudgetExhausted(stripe.APIConnectionError):
    """No attempt was made: the request's Stripe budget is spent."""


class BudgetedRequestsClient(stripe.RequestsClient):
    """The SDK's requests transport, bounded by the current call's budget.

    Hooks of stripe.HTTPClient (stripe pinned in requirements.txt; test_gateway covers them): the
    attempt timeout (`_timeout`, read by RequestsClient for each request), whether to retry, and
    the back-off before a retry.
    """

    def __init__(self, *, timeout: float) -> None:
        self._configured_timeout = timeout
        super().__init__(timeout=timeout)

    @property
    def _timeout(self) -> float:
        budget = _budget.get()
        if budget is None or budget.deadline is None:
            return self._configured_timeout
        return max(_MIN_ATTEMPT_SECONDS, min(self._configured_timeout, budget.remaining()))

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self._configured_timeout = value

    # RequestsClient's own signature (HTTPClient's declares another return type and a `_usage`
    # keyword that the retry loop never passes).
    def request(  # type: ignore[override]
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        budget = _budget.get()
        if budget is not None and budget.deadline is not None and budget.remaining() < _MIN_ATTEMPT_SECONDS:
            raise _BudgetExhausted("The request's Stripe time budget is spent.", should_retry=False)
        return super().request(method, url, headers, post_data)

    def _should_retry(
        self, response: Any, api_connection_error: Any, num_retries: int, max_network_retries: int | None
    ) -> bool:
        if not super()._should_retry(response, api_connection_error, num_retries, max_network_retries):
            return False
        budget = _budget.get()
        return budget is None or budget.remaining() > _MIN_ATTEMPT_SECONDS + stripe.HTTPClient.INITIAL_DELAY

    def _sleep_time_seconds(self, num_retries: int) -> float:
        sleep = super()._sleep_time_seconds(num_retries)
        budget = _budget.get()
        if budget is None:
            return sleep
        return max(0.0, min(sleep, budget.remaining() - _MIN_ATTEMPT_SECONDS))


@functools.cache
@sensitive_variables()
def client() -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
        http_client=BudgetedRequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
    )


@sensitive_variables()
def configure_sdk_globals() -> None:
    """dj-stripe calls the SDK's module-level API: point it at the same Stripe as our client."""
    stripe.api_base = settings.STRIPE_API_BASE
    stripe.max_network_retries = settings.STRIPE_MAX_NETWORK_RETRIES
    stripe.default_http_client = stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS)


# --- state for /health and /metrics ---------------------------------------------------------------


def breaker_state() -> str:
    return breaker.state


def stripe_health() -> dict[str, Any]:
    """Stripe as this process has seen it on real traffic (no call): down while the breaker is
    open; degraded while half-open, after an outage not yet followed by an answer, or while a call
    has been waiting longer than STRIPE_SLOW_CALL_SECONDS."""
    state = breaker.state
    slow = breaker.slow_calls(older_than=settings.STRIPE_SLOW_CALL_SECONDS)
    failures = breaker.fail_counter
    if state == OPEN:
        status = "down"
    elif state == HALF_OPEN or slow or failures:
        status = "degraded"
    else:
        status = "up"
    return {"status": status, "circuit_breaker": state, "failures": failures, "slow_calls": slow}


# --- the call -------------------------------------------------------------------------------------


def _is_outage(exc: BaseException) -> bool:
    """Network errors and timeouts (APIConnectionError) and Stripe's own 5xx; nothing else."""
    if isinstance(exc, _BudgetExhausted):
        return False  # no attempt was made: it says nothing about Stripe
    if isinstance(exc, stripe.APIConnectionError):
        return True
    status = getattr(exc, "http_status", None)
    return isinstance(exc, stripe.StripeError) and isinstance(status, int) and status >= 500


def _validate(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """What Stripe would refuse and we can see before calling (a client error is no outage)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Mapping):
            key = value.get("idempotency_key")
            if isinstance(key, str) and len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
                raise DomainError(
                    f"The idempotency key is longer than {IDEMPOTENCY_KEY_MAX_LENGTH} characters.",
                    code="idempotency_key_too_long",
                )


def _unavailable(message: str, retry_after: int) -> StripeUnavailable:
    return StripeUnavailable(message, headers={"Retry-After": str(retry_after)})


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one SDK call within the request's budget, behind the breaker; Stripe's errors become ours."""
    _validate(args, kwargs)
    budget = _budget.get() or Budget(settings.STRIPE_REQUEST_BUDGET_SECONDS)
    if budget.left < _MIN_ATTEMPT_SECONDS:
        raise _unavailable("Stripe did not answer in time; try again shortly.", breaker.retry_after())
    try:
        ticket = breaker.enter()
    except BreakerOpen as exc:
        raise _unavailable("Stripe is unavailable; try again shortly.", exc.retry_after) from None
    token = _budget.set(budget)
    started = time.monotonic()
    budget.deadline = started + budget.left
    try:
        result = fn(*args, **kwargs)
    except stripe.StripeError as exc:
        if _is_outage(exc):
            breaker.outage(ticket)
        elif isinstance(exc, _BudgetExhausted):
            breaker.abandoned(ticket)
        else:
            breaker.answered(ticket)
        raise _translated(exc) from exc
    except BaseException:
        breaker.abandoned(ticket)
        raise
    else:
        breaker.success(ticket)
        return result
    finally:
        budget.deadline = None
        budget.left -= time.monotonic() - started
        _budget.reset(token)


def _translated(exc: stripe.StripeError) -> DomainError:
    if isinstance(exc, stripe.CardError):
        error = exc.error
        return PaymentDeclined(
            exc.user_message or "The card was declined.",
            extra={"decline_code": str(getattr(error, "decline_code", None) or exc.code or "card_declined")},
        )
    if isinstance(exc, stripe.InvalidRequestError):
        return DomainError(exc.user_message or "Stripe refused the request.", code="stripe_invalid_request")
    if isinstance(exc, _BudgetExhausted):
        return _unavailable("Stripe did not answer in time; try again shortly.", breaker.retry_after())
    if _is_outage(exc):
        if breaker.state == OPEN:  # opened by this very failure: the client waits for its trial
            return _unavailable("Stripe is unavailable; try again shortly.", breaker.retry_after())
        return _unavailable("Stripe did not answer; try again shortly.", 5)
    if isinstance(exc, stripe.RateLimitError):
        return _unavailable("Stripe is busy; try again shortly.", 5)
    logger.error("unexpected Stripe error: %s", exc)
    return DomainError("Stripe refused the request.", code="stripe_error", status_code=502)


# --- Billing Meters (usage-based prices) ----------------------------------------------------------

# Stripe's answer to a meter event whose identifier it already holds: a plain 400, no error code
# ("An event already exists with identifier ..."). For us it means "delivered".
_METER_EVENT_DUPLICATE = "already exists with identifier"


@dataclass(frozen=True)
class MeterEventResult:
    identifier: str
    already_existed: bool  # Stripe had it from an earlier send (same identifier)


def _is_duplicate_meter_event(exc: stripe.StripeError) -> bool:
    message = str(getattr(exc, "user_message", "") or "")
    return isinstance(exc, stripe.InvalidRequestError) and (
        _METER_EVENT_DUPLICATE in message or exc.code == "resource_already_exists"
    )


def meter_event_create(
    *, event_name: str, stripe_customer_id: str, value: int, timestamp: int, identifier: str
) -> MeterEventResult:
    """Send one meter event; a repeated identifier counts as delivered (Stripe kept the first)."""

    def send() -> MeterEventResult:
        try:
            event = client().v1.billing.meter_events.create(
                {
                    "event_name": event_name,
                    "identifier": identifier,
                    "timestamp": timestamp,
                    "payload": {"stripe_customer_id": stripe_customer_id, "value": str(value)},
                },
                # The identifier is Stripe's dedupe; the same key also replays a lost answer.
                {"idempotency_key": f"meter-event:{identifier}"},
            )
        except stripe.InvalidRequestError as exc:
            if _is_duplicate_meter_event(exc):
                return MeterEventResult(identifier=identifier, already_existed=True)
            raise
        return MeterEventResult(identifier=str(event.identifier), already_existed=False)

    return call(send)


def meter_find(*, event_name: str) -> str | None:
    """The id of Stripe's active meter for `event_name`, if any (one active meter per event name).
    Each page is its own call, so every request goes through the breaker and the budget."""
    params: dict[str, Any] = {"status": "active", "limit": 100}
    while True:
        page = call(client().v1.billing.meters.list, params)
        for meter in page.data:
            if meter.event_name == event_name:
                return str(meter.id)
        if not page.has_more or not page.data:
            return None
        params = {**params, "starting_after": page.data[-1].id}


def meter_create(*, event_name: str, display_name: str) -> str:
    """Create a summing meter for `event_name` keyed on the Stripe customer id; returns its id."""
    meter = call(
        client().v1.billing.meters.create,
        {
            "display_name": display_name[:250],
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        },
        {"idempotency_key": f"meter:{event_name}"},
    )
    return str(meter.id)


def meter_event_summary_total(
    *, meter_id: str, stripe_customer_id: str, start_time: int, end_time: int
) -> int:
    """Stripe's aggregated value of one customer's events on one meter in [start_time, end_time):
    without a grouping window Stripe answers one summary for the whole range."""
    summaries = call(
        client().v1.billing.meters.event_summaries.list,
        meter_id,
        {"customer": stripe_customer_id, "start_time": start_time, "end_time": end_time, "limit": 100},
    )
    total = sum((Decimal(str(s.aggregated_value)) for s in summaries.data), Decimal(0))
    return int(total)


# --- invoices (dunning) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoicePayment:
    """What Stripe answered to paying an invoice: paid, or declined with the card's codes."""

    paid: bool
    invoice_status: str
    decline_code: str = ""
    advice_code: str = ""
    network_advice_code: str = ""
    payment_method: str = ""
    message: str = ""


def _error_field(error: Any, name: str) -> str:
    value = getattr(error, name, None) if error is not None else None
    if isinstance(value, Mapping):  # Stripe sends the payment method object
        value = value.get("id")
    return str(value or "")[:255]


def invoice_pay(invoice_id: str, *, idempotency_key: str, payment_method: str = "") -> InvoicePayment:
    """Ask Stripe to pay an open invoice now (off session), once per key. A declined card is an
    answer, not an error; an outage raises StripeUnavailable, a refused request DomainError."""
    params: dict[str, Any] = {"off_session": True}
    if payment_method:
        params["payment_method"] = payment_method
    try:
        invoice = call(client().v1.invoices.pay, invoice_id, params, {"idempotency_key": idempotency_key})
    except PaymentDeclined as exc:
        error = getattr(exc.__cause__, "error", None)
        return InvoicePayment(
            paid=False,
            invoice_status="open",
            decline_code=str(exc.extra.get("decline_code", ""))[:64],
            advice_code=_error_field(error, "advice_code")[:64],
            network_advice_code=_error_field(error, "network_advice_code")[:16],
            payment_method=_error_field(error, "payment_method"),
            message=exc.message[:300],
        )
    return InvoicePayment(paid=invoice.status == "paid", invoice_status=str(invoice.status))


@dataclass(frozen=True)
class PaymentError:
    """Why the card refused an invoice's payment: its PaymentIntent's last_payment_error."""

    decline_code: str  # the issuer's decline_code, else the error's code (e.g. expired_card)
    advice_code: str
    network_advice_code: str
    payment_method: str
    message: str


def _invoice_intent_id(invoice: Mapping[str, Any]) -> str:
    """The invoice's PaymentIntent: `payment_intent` before API version 2025-03-31, else its
    default payment (the newest one if none is marked default) in `payments` (expanded)."""
    direct = invoice.get("payment_intent")
    if direct:
        return str(direct if isinstance(direct, str) else direct.get("id") or "")
    payments = [p for p in ((invoice.get("payments") or {}).get("data") or []) if isinstance(p, Mapping)]
    payments.sort(key=lambda p: (bool(p.get("is_default")), int(p.get("created") or 0)), reverse=True)
    for payment in payments:
        intent = (payment.get("payment") or {}).get("payment_intent")
        if intent:
            return str(intent if isinstance(intent, str) else intent.get("id") or "")
    return ""


def invoice_payment_error(invoice_id: str) -> PaymentError | None:
    """Read from Stripe why the invoice's last payment failed (two reads, no write): the card's
    decline, advice and network advice codes. None when Stripe holds no payment error for it."""
    invoice = call(client().v1.invoices.retrieve, invoice_id, {"expand": ["payments"]}).to_dict()
    intent_id = _invoice_intent_id(invoice)
    if not intent_id:
        return None
    intent = call(client().v1.payment_intents.retrieve, intent_id).to_dict()
    error = intent.get("last_payment_error")
    if not isinstance(error, Mapping):
        return None
    method = error.get("payment_method") or intent.get("payment_method")
    if isinstance(method, Mapping):  # Stripe sends the payment method object
        method = method.get("id")
    return PaymentError(
        decline_code=str(error.get("decline_code") or error.get("code") or "")[:64],
        advice_code=str(error.get("advice_code") or "")[:64],
        network_advice_code=str(error.get("network_advice_code") or "")[:16],
        payment_method=str(method or "")[:255],
        message=str(error.get("message") or "")[:300],
    )


def invoice_status(invoice_id: str) -> str:
    return str(call(client().v1.invoices.retrieve, invoice_id).status)


def invoice_end(invoice_id: str, *, uncollectible: bool, idempotency_key: str) -> str:
    """Void the open invoice (or mark it uncollectible): never collected later. Its status after."""
    fn = client().v1.invoices.mark_uncollectible if uncollectible else client().v1.invoices.void_invoice
    try:
        return str(call(fn, invoice_id, {}, {"idempotency_key": idempotency_key}).status)
    except DomainError as exc:
        if exc.code != "stripe_invalid_request":
            raise
        return invoice_status(invoice_id)  # already paid, void or uncollectible: say which


def subscription_cancel_now(subscription_id: str, *, idempotency_key: str) -> str:
    """Cancel a subscription at Stripe at once; its status after (already cancelled is fine)."""
    try:
        return str(
            call(
                client().v1.subscriptions.cancel, subscription_id, {}, {"idempotency_key": idempotency_key}
            ).status
        )
    except DomainError as exc:
        if exc.code != "stripe_invalid_request":
            raise
        return str(call(client().v1.subscriptions.retrieve, subscription_id).status)
