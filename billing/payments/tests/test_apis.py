"""Payments over HTTP, end to end against the Stripe stand-in through the official SDK."""

import pytest
from django.contrib.auth.models import Group

from billing.models import Payment, PaymentStatusChange
from billing.stripe import gateway as stripe_gateway
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory
from payments_project.tests.helpers import token_client


@pytest.fixture
def ana():  # type: ignore[no-untyped-def]
    return UserFactory(username="ana")


@pytest.mark.django_db
def test_one_time_payment_with_a_good_card_succeeds(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    # when ana pays 15.00 EUR with a test visa
    response = token_client(ana).post(
        "/api/v1/payments/",
        {
            "amount": 1500,
            "currency": "eur",
            "description": "Poster",
            "order_id": "o-1",
            "payment_method": "pm_card_visa",
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY="key-1",
    )

    # then the payment succeeded, at Stripe and in our row
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["amount"], body["currency"], body["display_amount"]) == (
        "succeeded",
        1500,
        "EUR",
        "€15.00",
    )
    intent = stripe_gateway.client().v1.payment_intents.retrieve(body["stripe_payment_intent_id"])
    assert (intent.status, intent.amount, intent.currency, intent.description) == (
        "succeeded",
        1500,
        "eur",
        "Poster",
    )
    assert (intent.metadata["user_id"], intent.metadata["idempotency_key"]) == (str(ana.pk), "key-1")
    assert Payment.objects.get().user == ana


@pytest.mark.django_db
def test_a_retry_with_the_same_idempotency_key_never_charges_twice(
    stripe_standin: StandinServer, ana
) -> None:  # type: ignore[no-untyped-def]
    client = token_client(ana)
    payload = {"amount": 700, "currency": "JPY", "payment_method": "pm_card_visa"}
    first = client.post("/api/v1/payments/", payload, format="json", HTTP_IDEMPOTENCY_KEY="k")
    second = client.post("/api/v1/payments/", payload, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert first.json()["id"] == second.json()["id"]
    assert Payment.objects.count() == 1
    assert len(stripe_gateway.client().v1.payment_intents.list().data) == 1


@pytest.mark.django_db
def test_reusing_a_key_for_another_amount_is_a_409(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    client = token_client(ana)
    client.post(
        "/api/v1/payments/", {"amount": 700, "currency": "JPY"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    response = client.post(
        "/api/v1/payments/", {"amount": 800, "currency": "JPY"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.django_db
def test_a_declined_card_is_a_402_with_the_decline_code(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    # when ana pays with a card that Stripe declines
    response = token_client(ana).post(
        "/api/v1/payments/",
        {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa_chargeDeclined"},
        format="json",
    )

    # then she gets 402 with the decline code, and the attempt is recorded as failed
    assert response.status_code == 402
    assert response.json() == {
        "error": {
            "code": "card_declined",
            "message": "Your card was declined.",
            "fields": {},
            "decline_code": "generic_decline",
        }
    }
    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code) == ("failed", "generic_decline")


@pytest.mark.django_db
def test_without_a_payment_method_the_client_secret_is_returned(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    response = token_client(ana).post("/api/v1/payments/", {"amount": 2500, "currency": "USD"}, format="json")
    body = response.json()
    assert response.status_code == 201
    assert body["status"] == "requires_payment_method"
    assert body["client_secret"].startswith(body["stripe_payment_intent_id"] + "_secret_")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field", "code"),
    [
        ({"amount": 1005, "currency": "KWD"}, "amount", "invalid_precision"),
        ({"amount": 0, "currency": "USD"}, "amount", "min_value"),
        ({"amount": 100, "currency": "XYZ"}, "currency", "invalid"),
        ({"amount": "ten", "currency": "USD"}, "amount", "invalid"),
        # real units typed where minor units are asked: never read as 15 cents
        ({"amount": "15.00", "currency": "EUR"}, "amount", "invalid"),
        ({"amount": 15.0, "currency": "EUR"}, "amount", "invalid"),
        ({"amount": "1e3", "currency": "EUR"}, "amount", "invalid"),
        ({"amount": True, "currency": "EUR"}, "amount", "invalid"),
        ({"currency": "USD"}, "amount", "required"),
    ],
)
def test_bad_input_is_a_400_and_nothing_is_written(
    stripe_standin: StandinServer, ana, payload, field, code
) -> None:  # type: ignore[no-untyped-def]
    response = token_client(ana).post("/api/v1/payments/", payload, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"][field][0]["code"] == code
    assert Payment.objects.count() == 0


@pytest.mark.django_db
def test_a_form_gives_the_amount_as_digits(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    # when a form posts the amount in minor units, as text (a form has no numbers)
    response = token_client(ana).post("/api/v1/payments/", {"amount": "1500", "currency": "EUR"})
    # then it is read as those minor units
    assert (response.status_code, response.json()["amount"]) == (201, 1500)


@pytest.mark.django_db
def test_stripe_down_is_a_503_and_leaves_no_row(settings, ana) -> None:  # type: ignore[no-untyped-def]
    settings.STRIPE_API_BASE = "http://127.0.0.1:1"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_gateway.client.cache_clear()
    try:
        response = token_client(ana).post(
            "/api/v1/payments/", {"amount": 100, "currency": "USD"}, format="json"
        )
    finally:
        stripe_gateway.client.cache_clear()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "stripe_unavailable"
    assert response["Retry-After"] == "5"
    assert Payment.objects.count() == 0


@pytest.mark.django_db
def test_users_see_only_their_payments_and_staff_filter_all(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    # given one payment each for ana and bob
    bob = UserFactory(username="bob")
    mine = (
        token_client(ana).post("/api/v1/payments/", {"amount": 100, "currency": "USD"}, format="json").json()
    )
    theirs = (
        token_client(bob).post("/api/v1/payments/", {"amount": 200, "currency": "USD"}, format="json").json()
    )
    service = UserFactory(username="checkout-service")
    service.groups.add(Group.objects.get(name="service"))
    staff = token_client(service)

    # then each sees their own; bob's payment is a 404 for ana; staff see and filter all
    assert [p["id"] for p in token_client(ana).get("/api/v1/payments/").json()["results"]] == [mine["id"]]
    assert token_client(ana).get(f"/api/v1/payments/{theirs['id']}/").status_code == 404
    assert {p["id"] for p in staff.get("/api/v1/payments/").json()["results"]} == {mine["id"], theirs["id"]}
    assert [p["id"] for p in staff.get(f"/api/v1/payments/?user_id={bob.pk}").json()["results"]] == [
        theirs["id"]
    ]
    assert staff.get("/api/v1/payments/?status=succeeded").json()["count"] == 0
    assert staff.get("/api/v1/payments/?status=nope").status_code == 400


@pytest.mark.django_db
def test_staff_status_change_is_audited_and_users_cannot(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    payment = (
        token_client(ana).post("/api/v1/payments/", {"amount": 100, "currency": "USD"}, format="json").json()
    )
    staff_user = UserFactory(username="fin", is_staff=True)
    staff_user.groups.add(Group.objects.get(name="finance"))
    support = UserFactory(username="agent", is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    assert (
        token_client(support)
        .post(f"/api/v1/payments/{payment['id']}/status/", {"status": "succeeded", "reason": "x"})
        .status_code
        == 403
    )

    refused = token_client(ana).post(
        f"/api/v1/payments/{payment['id']}/status/", {"status": "succeeded", "reason": "x"}
    )
    done = token_client(staff_user).post(
        f"/api/v1/payments/{payment['id']}/status/", {"status": "canceled", "reason": "customer called"}
    )

    assert refused.status_code == 403
    assert done.status_code == 200 and done.json()["status"] == "canceled"
    change = PaymentStatusChange.objects.get()
    assert (change.from_status, change.to_status, change.staff_user, change.reason) == (
        "requires_payment_method",
        "canceled",
        staff_user,
        "customer called",
    )


@pytest.mark.django_db
def test_a_one_time_plan_is_sold_only_at_its_catalog_price(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    # given a lifetime plan listed at 49.00 USD
    from billing.catalog.tests.factories import PlanFactory, PriceFactory

    PriceFactory(plan=PlanFactory(code="lifetime", interval="one_time"), currency="USD", amount=4900)
    client = token_client(ana)

    # when ana tries to buy it for 0.50, then at its price
    cheap = client.post(
        "/api/v1/payments/",
        {"amount": 50, "currency": "USD", "plan": "lifetime", "payment_method": "pm_card_visa"},
        format="json",
    )
    fair = client.post(
        "/api/v1/payments/",
        {"amount": 4900, "currency": "USD", "plan": "lifetime", "payment_method": "pm_card_visa"},
        format="json",
    )

    # then the cheap one is refused before Stripe, the fair one goes through
    assert cheap.status_code == 400
    assert cheap.json()["error"]["code"] == "price_mismatch"
    assert cheap.json()["error"]["message"] == "Plan 'lifetime' costs $49.00 here."
    assert fair.status_code == 201 and fair.json()["status"] == "succeeded"
    assert list(Payment.objects.values_list("amount", flat=True)) == [4900]


@pytest.mark.django_db
def test_a_retry_while_the_first_request_is_in_flight_is_a_409_and_takes_nothing_away(
    stripe_standin: StandinServer, ana
) -> None:  # type: ignore[no-untyped-def]
    # given a first request that inserted its row and is still waiting for Stripe
    in_flight = Payment.objects.create(user=ana, amount=700, currency="JPY", idempotency_key="k")

    # when the retry arrives
    response = token_client(ana).post(
        "/api/v1/payments/", {"amount": 700, "currency": "JPY"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )

    # then it is told to retry, calls nothing, and the first request's row is intact
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "in_progress"
    assert response["Retry-After"] == "2"
    assert list(Payment.objects.values_list("pk", "stripe_payment_intent_id")) == [(in_flight.pk, None)]
    assert stripe_gateway.client().v1.payment_intents.list().data == []


@pytest.mark.django_db
def test_a_row_left_by_a_dead_request_is_taken_over_by_the_retry(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    # given a row whose request died before Stripe answered, a minute ago
    from datetime import timedelta

    from django.utils import timezone

    dead = Payment.objects.create(user=ana, amount=700, currency="JPY", idempotency_key="k")
    Payment.objects.filter(pk=dead.pk).update(created_at=timezone.now() - timedelta(minutes=1))

    # when the client retries with the same key and a card
    response = token_client(ana).post(
        "/api/v1/payments/",
        {"amount": 700, "currency": "JPY", "payment_method": "pm_card_visa"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k",
    )

    # then the same row is completed and paid once
    assert response.status_code == 201
    assert (response.json()["id"], response.json()["status"]) == (dead.pk, "succeeded")
    assert len(stripe_gateway.client().v1.payment_intents.list().data) == 1


@pytest.mark.django_db
def test_a_retried_declined_payment_replays_the_402(stripe_standin: StandinServer, ana) -> None:  # type: ignore[no-untyped-def]
    # given a payment declined under an Idempotency-Key
    client = token_client(ana)
    payload = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa_chargeDeclined"}
    first = client.post("/api/v1/payments/", payload, format="json", HTTP_IDEMPOTENCY_KEY="declined-1")

    # when the client retries with the same key and body
    second = client.post("/api/v1/payments/", payload, format="json", HTTP_IDEMPOTENCY_KEY="declined-1")

    # then the retry answers exactly as the first call did, and nothing new reached Stripe
    assert (first.status_code, second.status_code) == (402, 402)
    assert second.json() == first.json()
    assert Payment.objects.count() == 1
    assert len(stripe_gateway.client().v1.payment_intents.list().data) == 1


@pytest.mark.django_db
def test_a_customer_naming_another_user_in_the_list_gets_403(ana) -> None:  # type: ignore[no-untyped-def]
    # given another customer
    other = UserFactory(username="bob")

    # when ana lists payments for bob's user id
    response = token_client(ana).get(f"/api/v1/payments/?user_id={other.pk}")

    # then she is refused, as on every other endpoint, rather than shown her own rows
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["k" * 201, "clé-accentuée", "tab\tinside"])
def test_an_idempotency_key_stripe_would_refuse_is_a_400_before_any_stripe_call(
    stripe_standin: StandinServer, ana, key: str
) -> None:  # type: ignore[no-untyped-def]
    # when ana pays with a key too long (or not printable ASCII) for Stripe's 255 once prefixed
    response = token_client(ana).post(
        "/api/v1/payments/",
        {"amount": 1500, "currency": "EUR"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )

    # then a 400 naming the header; no row, no Stripe customer, and the breaker counted nothing
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert list(response.json()["error"]["fields"]) == ["Idempotency-Key"]
    assert Payment.objects.count() == 0
    assert stripe_gateway.client().v1.customers.list().data == []
    assert stripe_gateway.breaker.fail_counter == 0
