"""The gateway to Stripe (billing/stripe/gateway.py) against a Stripe front whose faults we choose."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from billing.stripe import gateway
from devtools.faulty_stripe import FaultyStripe
from payments_project.errors import DomainError


@pytest.fixture
def front(settings: Any) -> Iterator[FaultyStripe]:
    """Our client pointed at a Stripe front (hanging until told otherwise), short timeouts."""
    with FaultyStripe() as server:
        settings.STRIPE_API_BASE = server.url
        settings.STRIPE_TIMEOUT_SECONDS = 0.4
        settings.STRIPE_MAX_NETWORK_RETRIES = 0
        settings.STRIPE_REQUEST_BUDGET_SECONDS = 0.4
        gateway.client.cache_clear()
        yield server
    gateway.client.cache_clear()


@pytest.fixture
def fail_max() -> Iterator[None]:
    """A breaker that opens only after many outages, so a test's own failures do not open it."""
    before = gateway.breaker.fail_max
    gateway.breaker.fail_max = 100
    yield
    gateway.breaker.fail_max = before


def _retrieve(customer: str = "cus_1", **options: Any) -> Any:
    return gateway.call(gateway.client().v1.customers.retrieve, customer, {}, options or None)


def test_calls_from_several_threads_wait_for_stripe_side_by_side(front: FaultyStripe, fail_max: None) -> None:
    # given Stripe accepting connections and never answering
    errors: list[BaseException] = []

    def pay() -> None:
        try:
            _retrieve()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    # when four requests call it at once
    threads = [threading.Thread(target=pay) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # then all four were waiting on Stripe together (no lock queues them), and each got a 503
    assert front.peak_open == 4
    assert [(type(e), e.status_code, e.headers["Retry-After"]) for e in errors] == [  # type: ignore[attr-defined]
        (gateway.StripeUnavailable, 503, "5")
    ] * 4
    assert gateway.breaker.fail_counter == 4  # a timeout is an outage


def test_one_budget_covers_the_retries_and_every_later_call_of_the_request(
    front: FaultyStripe, fail_max: None, settings: Any
) -> None:
    # given a budget of 1 s for the request, attempts of at most 0.4 s and up to 5 retries
    settings.STRIPE_MAX_NETWORK_RETRIES = 5
    gateway.client.cache_clear()

    with gateway.budget_scope(1.0) as budget:
        # when a call waits on a hung Stripe, then a second call is made in the same request
        with pytest.raises(gateway.StripeUnavailable):
            _retrieve()
        attempts = front.accepted
        with pytest.raises(gateway.StripeUnavailable) as second:
            _retrieve()

    # then the first call's retries stopped when the budget was spent (3 attempts fit at most:
    # 0.4 s, back-off of at least 0.5 s, then what was left), the second made no attempt at all
    assert 2 <= attempts <= 3
    assert front.accepted == attempts
    assert budget.left < 0.1
    assert (second.value.message, second.value.status_code) == (
        "Stripe did not answer in time; try again shortly.",
        503,
    )
    assert gateway.breaker.fail_counter == 1  # the second call told nothing about Stripe


ANSWERS = [
    # (status, body, our status, our code, counts as an outage)
    (
        400,
        {"error": {"type": "invalid_request_error", "message": "No such customer"}},
        400,
        "stripe_invalid_request",
        0,
    ),
    (
        402,
        {"error": {"type": "card_error", "code": "card_declined", "message": "Declined"}},
        402,
        "card_declined",
        0,
    ),
    (429, {"error": {"type": "rate_limit_error", "message": "Too many"}}, 503, "stripe_unavailable", 0),
    (401, {"error": {"type": "invalid_request_error", "message": "Bad key"}}, 502, "stripe_error", 0),
    (400, b"Bad Request", 502, "stripe_error", 0),  # a 4xx that is not JSON: still an answer
    (500, {"error": {"type": "api_error", "message": "Oops"}}, 503, "stripe_unavailable", 1),
    (503, b"upstream down", 503, "stripe_unavailable", 1),
]


@pytest.mark.parametrize(("status", "body", "ours", "code", "outages"), ANSWERS)
def test_only_network_errors_timeouts_and_5xx_count_as_outages(
    front: FaultyStripe, fail_max: None, status: int, body: Any, ours: int, code: str, outages: int
) -> None:
    # given Stripe answering this
    front.respond(status, body)

    # when we call it
    with pytest.raises(DomainError) as raised:
        _retrieve()

    # then our answer and whether the breaker counted it
    assert (raised.value.status_code, raised.value.code) == (ours, code)
    assert gateway.breaker.fail_counter == outages


def test_an_oversized_idempotency_key_is_refused_before_calling_stripe(front: FaultyStripe) -> None:
    # when a call carries a key longer than Stripe takes
    with pytest.raises(DomainError) as raised:
        _retrieve(idempotency_key="k" * 256)

    # then it is our 400, Stripe was never called, and nothing counts as an outage
    assert (raised.value.status_code, raised.value.code) == (400, "idempotency_key_too_long")
    assert front.accepted == 0
    assert gateway.breaker.fail_counter == 0


@pytest.mark.django_db
def test_health_is_degraded_while_a_call_hangs_then_down_once_the_breaker_opens(
    front: FaultyStripe, settings: Any
) -> None:
    # given a call hanging on Stripe for longer than the slow-call threshold
    settings.STRIPE_SLOW_CALL_SECONDS = 0.0
    settings.STRIPE_REQUEST_BUDGET_SECONDS = 5.0
    settings.STRIPE_TIMEOUT_SECONDS = 5.0
    gateway.client.cache_clear()
    failed: list[BaseException] = []

    def hung_call() -> None:
        try:
            _retrieve()
        except DomainError as exc:
            failed.append(exc)

    in_flight = threading.Thread(target=hung_call)
    in_flight.start()
    try:
        while front.open < 1 and in_flight.is_alive():
            threading.Event().wait(0.01)

        # when /health is asked meanwhile
        during = Client().get("/health").json()["components"]["stripe"]
    finally:
        front.stop()  # the hung call fails at once: a network error
        in_flight.join(timeout=10)

    # then Stripe is degraded (still closed), and down once enough outages opened the breaker
    assert (during["status"], during["circuit_breaker"], during["slow_calls"]) == ("degraded", "closed", 1)
    assert [type(exc) for exc in failed] == [gateway.StripeUnavailable]
    for _ in range(gateway.breaker.fail_max):
        if gateway.breaker_state() != "open":
            with pytest.raises(gateway.StripeUnavailable):
                _retrieve()
    after = Client().get("/health")
    assert after.status_code == 503
    assert after.json()["components"]["stripe"]["status"] == "down"
    with pytest.raises(gateway.StripeUnavailable) as refused:
        _retrieve()
    assert refused.value.message == "Stripe is unavailable; try again shortly."
    assert refused.value.headers["Retry-After"] == str(settings.STRIPE_BREAKER_RESET_SECONDS)


@pytest.mark.parametrize(
    ("invoice", "intent"),
    [
        # API versions before 2025-03-31: the id, or the expanded object
        ({"payment_intent": "pi_old"}, "pi_old"),
        ({"payment_intent": {"id": "pi_expanded"}}, "pi_expanded"),
        # later versions: the default payment in `payments` (expanded), whatever the order
        (
            {
                "payments": {
                    "data": [
                        {"is_default": False, "created": 9, "payment": {"payment_intent": "pi_other"}},
                        {"is_default": True, "created": 1, "payment": {"payment_intent": "pi_default"}},
                    ]
                }
            },
            "pi_default",
        ),
        # none marked default: the newest
        (
            {
                "payments": {
                    "data": [
                        {"created": 1, "payment": {"payment_intent": "pi_first"}},
                        {"created": 5, "payment": {"payment_intent": {"id": "pi_newest"}}},
                    ]
                }
            },
            "pi_newest",
        ),
        ({"payments": {"data": []}}, ""),
        ({}, ""),
    ],
)
def test_the_invoice_payment_intent_is_found_in_either_api_shape(invoice: dict, intent: str) -> None:
    assert gateway._invoice_intent_id(invoice) == intent
