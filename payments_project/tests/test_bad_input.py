"""Bad input through the real URLs, one table per class: a 4xx in the error format, nothing written.

The classes (docs/security.md): NUL characters, integers beyond 64 bits or beyond what Stripe
accepts, JSON nested too deep, bodies too long, strings longer than their column (keys derived
from them included), currencies Stripe does not charge in, and, in a correctly signed Stripe
webhook, the same plus timestamps out of any real range.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import DataError, IntegrityError
from django.test import Client
from djstripe.models import WebhookEventTrigger
from rest_framework.test import APIClient

from billing.models import Payment, PaymentStatusChange, StripeEvent
from billing.stripe import gateway as stripe_gateway
from billing.stripe.tests.events import deliver
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory
from payments_project.api import error_answer
from payments_project.errors import constraint_name
from payments_project.tests.helpers import token_client
from subscriptions.families.models import Family
from subscriptions.models import Subscription

BIG = 2**64
MB = 1024 * 1024


def _rows() -> dict[str, int]:
    return {
        "payments": Payment.objects.count(),
        "status_changes": PaymentStatusChange.objects.count(),
        "families": Family.objects.count(),
        "subscriptions": Subscription.objects.count(),
        "stripe_events": StripeEvent.objects.count(),
    }


def _assert_refused(response: Any, status: int) -> None:
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message", "fields"} <= set(body["error"])


@pytest.fixture
def customer() -> APIClient:
    client = token_client(UserFactory())
    client.raise_request_exception = False
    return client


@pytest.fixture
def finance() -> APIClient:
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get_or_create(name="finance")[0])
    client = token_client(user)
    client.raise_request_exception = False
    return client


def _pay(**fields: Any) -> dict[str, Any]:
    return {"amount": 1500, "currency": "EUR", "payment_method": "pm_card_visa", **fields}


Request = Callable[[APIClient], Any]


def _get(url: str) -> Request:
    return lambda client: client.get(url)


def _post(url: str, data: Any, **headers: str) -> Request:
    return lambda client: client.post(url, data, format="json", **headers)


def _raw(url: str, body: str | bytes, content_type: str = "application/json") -> Request:
    return lambda client: client.generic("POST", url, body, content_type=content_type)


NUL_CASES = {
    "path segment": (_get("/api/v1/plans/pro%00x/"), 400),
    "path id": (_get("/api/v1/payments/1%00/"), 400),
    "query parameter": (_get("/api/v1/plans/?country=F%00"), 400),
    "entitlement query": (_get("/api/v1/entitlements/check?feature=a%00b"), 400),
    "json string": (_post("/api/v1/payments/", _pay(description="a\x00b")), 400),
    "json key": (_post("/api/v1/payments/", _pay(metadata={"a\x00": "b"})), 400),
    "family name": (_post("/api/v1/families/", {"name": "x\x00"}), 400),
    "raw NUL byte": (_raw("/api/v1/families/", b'{"name": "x\x00"}'), 400),
    "form field": (_raw("/api/v1/families/", "name=x%00", "application/x-www-form-urlencoded"), 400),
}

INTEGER_CASES = {
    "amount beyond 64 bits": (_post("/api/v1/payments/", _pay(amount=BIG)), 400),
    "amount beyond Stripe's 8 digits": (_post("/api/v1/payments/", _pay(amount=100_000_000)), 400),
    "negative amount": (_post("/api/v1/payments/", _pay(amount=-1)), 400),
    "user_id query beyond 64 bits": (_get(f"/api/v1/payments/?user_id={BIG}"), 400),
    "user_id query of 5000 digits": (_get("/api/v1/payments/?user_id=" + "9" * 5000), 400),
    "user_id on create": (lambda c: c.post(f"/api/v1/payments/?user_id={BIG}", _pay(), format="json"), 400),
    "subscriptions user_id": (_get(f"/api/v1/subscriptions/?user_id={BIG}"), 400),
    "path id beyond 64 bits": (_get(f"/api/v1/payments/{BIG}/"), 404),
    "subscription path id": (_get(f"/api/v1/subscriptions/{BIG}/"), 404),
    "family member id": (_post("/api/v1/families/1/members/", {"user_id": BIG}), 400),
    "bulk check user_id": (
        _post("/api/v1/entitlements/bulk-check", {"features": ["a"], "user_id": BIG}),
        400,
    ),
    "float infinity": (_raw("/api/v1/payments/", '{"amount": Infinity, "currency": "EUR"}'), 400),
    "number beyond a double (would parse as infinity)": (
        _raw(
            "/api/v1/usage/events/",
            '{"feature": "api_calls", "idempotency_key": "k", "quantity": 1, "metadata": {"x": 1e400}}',
        ),
        400,
    ),
}

NESTING_CASES = {
    "arrays 5,000 deep": (_raw("/api/v1/families/", "[" * 5000 + "]" * 5000), 400),
    "objects 100,000 deep": (_raw("/api/v1/payments/", '{"a":' * 100_000 + "1" + "}" * 100_000), 400),
    "deep under a field": (_raw("/api/v1/payments/", '{"metadata": ' + "[" * 40 + "]" * 40 + "}"), 400),
    "brackets in strings do not count": (
        _post("/api/v1/payments/", _pay(currency="XTS", description="[" * 5000)),
        400,  # refused for its currency: the text itself is fine
    ),
}

SIZE_CASES = {
    "body over the limit": (_raw("/api/v1/families/", '{"name": "' + "x" * (MB + 10) + '"}'), 413),
    "form body over the limit": (
        _raw("/api/v1/families/", "name=" + "x" * (MB + 10), "application/x-www-form-urlencoded"),
        413,
    ),
}

LENGTH_CASES = {
    "order_id longer than its derived key allows": (
        _post("/api/v1/payments/", _pay(order_id="o" * 201)),
        400,
    ),
    "description longer than its column": (_post("/api/v1/payments/", _pay(description="d" * 1001)), 400),
    "metadata key longer than Stripe's 40": (_post("/api/v1/payments/", _pay(metadata={"k" * 41: "v"})), 400),
    "metadata value longer than Stripe's 500": (
        _post("/api/v1/payments/", _pay(metadata={"k": "v" * 501})),
        400,
    ),
    "payment_method longer than its column": (
        _post("/api/v1/payments/", _pay(payment_method="p" * 256)),
        400,
    ),
    "Idempotency-Key": (_post("/api/v1/payments/", _pay(), HTTP_IDEMPOTENCY_KEY="k" * 201), 400),
    "checkout Idempotency-Key": (
        _post(
            "/api/v1/checkout-sessions/",
            {"plan": "pro", "success_url": "https://a.example/", "cancel_url": "https://a.example/"},
            HTTP_IDEMPOTENCY_KEY="k" * 201,
        ),
        400,
    ),
    "checkout plan code": (
        _post(
            "/api/v1/checkout-sessions/",
            {"plan": "p" * 65, "success_url": "https://a.example/", "cancel_url": "https://a.example/"},
        ),
        400,
    ),
    "family name": (_post("/api/v1/families/", {"name": "n" * 201}), 400),
    "checkout success_url": (
        _post(
            "/api/v1/checkout-sessions/",
            {
                "plan": "pro",
                "success_url": "https://a.example/" + "u" * 2048,
                "cancel_url": "https://a.example/",
            },
        ),
        400,
    ),
    "customer filter": (_get("/api/v1/payments/?customer=" + "c" * 256), 400),
    "feature code": (_get("/api/v1/entitlements/check?feature=" + "f" * 65), 400),
}

_MANY = "&".join(f"a{i}=1" for i in range(1100))  # past DATA_UPLOAD_MAX_NUMBER_FIELDS (1,000)
FIELD_COUNT_CASES = {
    "plans (no authentication needed)": (_get(f"/api/v1/plans/?{_MANY}"), 400),
    "entitlement check (a hot path)": (_get(f"/api/v1/entitlements/check?feature=x&{_MANY}"), 400),
    "usage event (a hot path)": (
        _post(f"/api/v1/usage/events/?{_MANY}", {"feature": "x", "idempotency_key": "k"}),
        400,
    ),
    "usage batch": (_post(f"/api/v1/usage/batch/?{_MANY}", {"events": []}), 400),
    "form fields": (_raw("/api/v1/families/", _MANY, "application/x-www-form-urlencoded"), 400),
}
CURRENCY_CASES = {
    code: (_post("/api/v1/payments/", _pay(currency=code, amount=1500)), 400)
    for code in ("XXX", "XTS", "XAU", "XAG", "XDR", "BOV", "ZZZ", "eu1")
}


def _run_table(client: APIClient, request: Request, status: int) -> None:
    before = _rows()
    response = request(client)
    _assert_refused(response, status)
    assert _rows() == before


@pytest.mark.django_db
@pytest.mark.parametrize(("request_", "status"), NUL_CASES.values(), ids=NUL_CASES.keys())
def test_nul_characters_are_refused(
    customer: APIClient, stripe_standin: StandinServer, request_: Request, status: int
) -> None:
    _run_table(customer, request_, status)


@pytest.mark.django_db
@pytest.mark.parametrize(("request_", "status"), INTEGER_CASES.values(), ids=INTEGER_CASES.keys())
def test_integers_out_of_range_are_refused(
    customer: APIClient, stripe_standin: StandinServer, request_: Request, status: int
) -> None:
    _run_table(customer, request_, status)


@pytest.mark.django_db
@pytest.mark.parametrize(("request_", "status"), NESTING_CASES.values(), ids=NESTING_CASES.keys())
def test_deep_json_is_refused(
    customer: APIClient, stripe_standin: StandinServer, request_: Request, status: int
) -> None:
    _run_table(customer, request_, status)


@pytest.mark.django_db
@pytest.mark.parametrize(("request_", "status"), SIZE_CASES.values(), ids=SIZE_CASES.keys())
def test_bodies_over_the_limit_are_refused(
    customer: APIClient, stripe_standin: StandinServer, request_: Request, status: int
) -> None:
    _run_table(customer, request_, status)


@pytest.mark.django_db
@pytest.mark.parametrize(("request_", "status"), LENGTH_CASES.values(), ids=LENGTH_CASES.keys())
def test_strings_longer_than_their_column_are_refused(
    customer: APIClient, stripe_standin: StandinServer, request_: Request, status: int
) -> None:
    _run_table(customer, request_, status)


@pytest.mark.django_db
@pytest.mark.parametrize(("request_", "status"), FIELD_COUNT_CASES.values(), ids=FIELD_COUNT_CASES.keys())
def test_more_query_or_form_fields_than_django_parses_are_refused(
    customer: APIClient, stripe_standin: StandinServer, request_: Request, status: int
) -> None:
    # (the hot paths' answer functions read the query first: it raises there, and the view answers)
    _run_table(customer, request_, status)


@pytest.mark.django_db
@pytest.mark.parametrize(("request_", "status"), CURRENCY_CASES.values(), ids=CURRENCY_CASES.keys())
def test_currencies_stripe_does_not_charge_in_are_refused(
    customer: APIClient, stripe_standin: StandinServer, request_: Request, status: int
) -> None:
    _run_table(customer, request_, status)


@pytest.mark.django_db
def test_staff_input_is_bounded_too(finance: APIClient, stripe_standin: StandinServer) -> None:
    # the reason of a status change is bounded by its column, NUL refused
    cases = [
        (_post("/api/v1/payments/1/status/", {"status": "failed", "reason": "r" * 1001}), 400),
        (_post("/api/v1/payments/1/status/", {"status": "failed", "reason": "a\x00"}), 400),
        (_get(f"/api/v1/payments/?user_id={BIG}"), 400),
    ]
    for request_, status in cases:
        _run_table(finance, request_, status)


# --- the signed Stripe webhook ---------------------------------------------------------------------


def _event(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "evt_bad_input",
        "object": "event",
        "created": 1_700_000_000,
        "livemode": False,
        "type": "customer.updated",
        "data": {"object": {"id": "cus_x", "object": "customer"}},
        **overrides,
    }


WEBHOOK_CASES: dict[str, tuple[str, int, bool]] = {
    # body, status, whether dj-stripe's delivery row is written (a signed body refused is kept, invalid)
    "nested 5,000 deep": (
        '{"id": "evt_1", "livemode": false, "x": ' + "[" * 5000 + "]" * 5000 + "}",
        400,
        False,
    ),
    "body over the limit": (json.dumps(_event(pad="x" * (MB + 10))), 413, False),
    "NUL in a string": (json.dumps(_event(type="a\x00")), 400, True),
    "NUL in a key": (json.dumps(_event(data={"object": {"a\x00": 1}})), 400, True),
    "created past year 9999": (json.dumps(_event(created=10**12)), 400, True),
    "created a second past 2200": (json.dumps(_event(created=7_258_118_401)), 400, True),
    "NUL escaped in a nested string": (
        json.dumps(_event(data={"object": {"id": "cus_x", "n": ["\x00"]}})),
        400,
        True,
    ),
    "period end 2^63": (
        json.dumps(_event(data={"object": {"id": "sub_x", "current_period_end": 2**63 - 1}})),
        400,
        True,
    ),
    "negative timestamp": (
        json.dumps(_event(data={"object": {"id": "in_x", "paid_at": -(10**15)}})),
        400,
        True,
    ),
    "integer beyond 64 bits": (json.dumps(_event(data={"object": {"amount": BIG}})), 400, True),
    "event id longer than its column": (json.dumps(_event(id="evt_" + "e" * 300)), 400, True),
}


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "status", "kept"), WEBHOOK_CASES.values(), ids=WEBHOOK_CASES.keys())
def test_signed_webhook_bad_input_is_refused(
    client: Client, stripe_standin: StandinServer, body: str, status: int, kept: bool
) -> None:
    client.raise_request_exception = False
    triggers = WebhookEventTrigger.objects.count()
    before = _rows()
    response = deliver(client, body)
    _assert_refused(response, status)
    assert _rows() == before
    assert WebhookEventTrigger.objects.filter(valid=True).count() == 0
    assert WebhookEventTrigger.objects.count() == triggers + (1 if kept else 0)


# --- database refusals and Stripe's breaker ---------------------------------------------------------


def test_database_refusals_answer_400_and_409_in_the_error_format() -> None:
    # given what the database raises for a value too long and for a broken constraint (SQLite's wording)
    data = error_answer(DataError("value too long for type character varying(255)"))
    conflict = error_answer(
        IntegrityError("UNIQUE constraint failed: billing_payment.user_id, billing_payment.idempotency_key")
    )

    # then the client gets a 400 and a 409 naming the constraint, never a 500
    assert (data.status, data.body["error"]["code"]) == (400, "invalid_value")
    assert (conflict.status, conflict.body["error"]["code"]) == (409, "conflict")
    assert conflict.body["error"]["constraint"] == "payment_idempotency_key"


def test_constraint_names_are_recognised_on_sqlite_wording() -> None:
    assert (
        constraint_name(IntegrityError("CHECK constraint failed: payment_amount_positive"))
        == "payment_amount_positive"
    )
    assert (
        constraint_name(
            IntegrityError(
                "UNIQUE constraint failed: billing_payment.user_id, billing_payment.idempotency_key"
            )
        )
        == "payment_idempotency_key"
    )


@pytest.mark.django_db
def test_refused_input_never_opens_the_stripe_breaker(
    customer: APIClient, stripe_standin: StandinServer
) -> None:
    # given more refused requests than the breaker tolerates outages (before and at Stripe)
    for _ in range(stripe_gateway.breaker.fail_max + 2):
        _assert_refused(
            customer.post("/api/v1/payments/", _pay(), format="json", HTTP_IDEMPOTENCY_KEY="k" * 300), 400
        )
        _assert_refused(
            customer.post("/api/v1/payments/", _pay(payment_method="pm_nonexistent"), format="json"), 400
        )

    # then the breaker is closed and counted no outage: the next customer pays
    assert (stripe_gateway.breaker.state, stripe_gateway.breaker.fail_counter) == ("closed", 0)
    other = token_client(UserFactory())
    assert other.post("/api/v1/payments/", _pay(), format="json").status_code == 201


@pytest.mark.django_db
def test_a_request_django_refuses_before_any_view_is_answered_in_the_error_format(client: Client) -> None:
    # given a host outside ALLOWED_HOSTS (Django's own 400, before any view)
    client.raise_request_exception = False

    response = client.get("/health/live", HTTP_HOST="evil.test")

    _assert_refused(response, 400)
    assert response.json()["error"]["code"] == "bad_request"
