"""Every handled event type arrives through the real webhook URL, signed like Stripe.

The objects the events carry are real objects of the Stripe stand-in (made through the SDK), so
the calls dj-stripe makes while processing (it re-reads each object) are answered by it.
"""

import time
from typing import Any

import pytest
from django.test import Client
from djstripe.models import WebhookEventTrigger

from billing.models import Payment, Refund, StripeEvent
from billing.payments.services import payment_create
from billing.payments.signals import payment_refunded, payment_succeeded
from billing.stripe import gateway as stripe_gateway
from billing.stripe.services import stripe_event_reprocess
from billing.stripe.tests.events import SECRET, deliver, event
from devtools.testing import StandinServer
from payments_project.accounts.tests.factories import UserFactory


@pytest.fixture
def received() -> Any:
    """Records the billing domain signals sent (what the entitlements app would act on)."""
    calls: list[tuple[str, int]] = []

    def on_paid(sender: Any, payment: Payment, **kw: Any) -> None:
        calls.append(("succeeded", payment.pk))

    def on_refund(sender: Any, payment: Payment, refund: Refund, **kw: Any) -> None:
        calls.append(("refunded", refund.amount))

    payment_succeeded.connect(on_paid)
    payment_refunded.connect(on_refund)
    yield calls
    payment_succeeded.disconnect(on_paid)
    payment_refunded.disconnect(on_refund)


@pytest.fixture
def pending_payment(stripe_standin: StandinServer) -> Payment:
    """A payment whose PaymentIntent the frontend will confirm with Stripe.js."""
    return payment_create(user=UserFactory(), amount=1200, currency="USD", description="Mug")


def _confirm_at_stripe(payment: Payment, method: str = "pm_card_visa") -> Any:
    sdk = stripe_gateway.client()
    sdk.v1.payment_intents.update(payment.stripe_payment_intent_id, {"payment_method": method})
    return sdk.v1.payment_intents.confirm(payment.stripe_payment_intent_id)


def _deliver(client: Client, payload: dict[str, Any], capture: Any, **kw: Any) -> Any:
    with capture(execute=True):
        return deliver(client, payload, **kw)


@pytest.mark.django_db
def test_payment_intent_succeeded_marks_the_payment_paid_once(
    client: Client, pending_payment: Payment, received: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given the customer paid at Stripe
    intent = _confirm_at_stripe(pending_payment)
    payload = event("payment_intent.succeeded", intent)

    # when Stripe delivers the event twice
    first = _deliver(client, payload, django_capture_on_commit_callbacks)
    second = _deliver(client, payload, django_capture_on_commit_callbacks)

    # then both deliveries are accepted, the event is processed once, the payment succeeded once
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json() == {"received": True, "event": payload["id"]}
    row = StripeEvent.objects.get()
    assert (row.type, row.status, row.attempts, row.deliveries) == ("payment_intent.succeeded", "done", 1, 2)
    pending_payment.refresh_from_db()
    assert pending_payment.status == "succeeded"
    assert received == [("succeeded", pending_payment.pk)]


@pytest.mark.django_db
def test_out_of_order_failed_after_succeeded_cannot_move_the_payment_back(
    client: Client, pending_payment: Payment, received: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given a first attempt that failed and a second that succeeded, at Stripe
    sdk = stripe_gateway.client()
    failed_snapshot = sdk.v1.payment_intents.retrieve(pending_payment.stripe_payment_intent_id).to_dict()
    failed_snapshot.update(status="requires_payment_method", last_payment_error={"code": "card_declined"})
    succeeded = _confirm_at_stripe(pending_payment)
    now = int(time.time())

    # when the events arrive newest first
    _deliver(
        client, event("payment_intent.succeeded", succeeded, created=now), django_capture_on_commit_callbacks
    )
    _deliver(
        client,
        event("payment_intent.payment_failed", failed_snapshot, created=now - 60),
        django_capture_on_commit_callbacks,
    )

    # then the payment stays succeeded (the late event re-reads Stripe's current state)
    pending_payment.refresh_from_db()
    assert pending_payment.status == "succeeded"
    assert sorted(StripeEvent.objects.values_list("status", flat=True)) == ["done", "done"]
    assert received == [("succeeded", pending_payment.pk)]


@pytest.mark.django_db
def test_charge_succeeded_and_charge_refunded_from_the_dashboard(
    client: Client, pending_payment: Payment, received: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given a paid payment
    intent = _confirm_at_stripe(pending_payment)
    sdk = stripe_gateway.client()
    charge_id = intent.latest_charge if isinstance(intent.latest_charge, str) else intent.latest_charge.id
    charge = sdk.v1.charges.retrieve(charge_id)
    _deliver(client, event("charge.succeeded", charge), django_capture_on_commit_callbacks)

    # when support refunds 5.00 in Stripe's dashboard and Stripe tells us
    sdk.v1.refunds.create({"payment_intent": intent.id, "amount": 500})
    charge = sdk.v1.charges.retrieve(charge_id)
    _deliver(client, event("charge.refunded", charge), django_capture_on_commit_callbacks)
    _deliver(client, event("charge.refunded", charge), django_capture_on_commit_callbacks)

    # then our refund row mirrors it (no staff user), once
    pending_payment.refresh_from_db()
    assert (pending_payment.status, pending_payment.amount_refunded) == ("succeeded", 500)
    refund = Refund.objects.get()
    assert (refund.amount, refund.currency, refund.status, refund.created_by) == (
        500,
        "USD",
        "succeeded",
        None,
    )
    assert received == [("succeeded", pending_payment.pk), ("refunded", 500)]


@pytest.mark.django_db
def test_checkout_session_completed_in_payment_mode_records_the_payment(
    client: Client, stripe_standin: StandinServer, received: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given a one-time checkout completed with a good card on the stand-in's payment page
    import json
    import urllib.request

    from billing.catalog.tests.factories import PlanFactory, PriceFactory
    from subscriptions.checkout.services import checkout_session_create

    user = UserFactory()
    PriceFactory(plan=PlanFactory(code="lifetime", interval="one_time"), currency="USD", amount=4900)
    session = checkout_session_create(
        user=user,
        plan_code="lifetime",
        country=None,
        zone_code=None,
        success_url="https://example.com/ok",
        cancel_url="https://example.com/no",
    )
    request = urllib.request.Request(
        f"{stripe_standin.url}/_dev/checkout/{session['id']}/complete",
        data=json.dumps({"card": "4242424242424242"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).read()
    completed = stripe_gateway.client().v1.checkout.sessions.retrieve(session["id"])

    # when Stripe delivers checkout.session.completed
    response = _deliver(
        client, event("checkout.session.completed", completed), django_capture_on_commit_callbacks
    )

    # then the payment exists, succeeded, for that user and plan
    assert response.status_code == 200
    payment = Payment.objects.get()
    assert (payment.user, payment.amount, payment.currency, payment.status, payment.plan.code) == (
        user,
        4900,
        "USD",
        "succeeded",
        "lifetime",
    )
    assert payment.stripe_payment_intent_id == completed.payment_intent
    assert received == [("succeeded", payment.pk)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("wrong secret", {"secret": "whsec_someone_else"}),
        ("stale timestamp", {"timestamp": -301}),  # seconds from now, when the test runs
        ("timestamp more than 5 minutes ahead", {"timestamp": 301}),
    ],
)
def test_bad_signatures_are_400_recorded_invalid_and_change_nothing(
    client: Client, pending_payment: Payment, case: str, kwargs: dict[str, Any]
) -> None:
    intent = _confirm_at_stripe(pending_payment)
    if "timestamp" in kwargs:
        kwargs = {"timestamp": int(time.time()) + kwargs["timestamp"]}
    response = deliver(client, event("payment_intent.succeeded", intent), **kwargs)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhook"
    assert list(WebhookEventTrigger.objects.values_list("valid", flat=True)) == [False]
    assert StripeEvent.objects.count() == 0
    pending_payment.refresh_from_db()
    assert pending_payment.status == "requires_payment_method"


@pytest.mark.django_db
def test_a_timestamp_a_little_ahead_of_our_clock_is_accepted(
    client: Client, pending_payment: Payment
) -> None:
    # given a delivery signed 4 minutes "in the future" (Stripe's clock ahead of ours)
    intent = _confirm_at_stripe(pending_payment)

    # when it arrives, then it is taken like any other
    response = deliver(client, event("payment_intent.succeeded", intent), timestamp=int(time.time()) + 240)
    assert response.status_code == 200
    assert list(WebhookEventTrigger.objects.values_list("valid", flat=True)) == [True]


@pytest.mark.django_db
def test_missing_signature_is_400_and_stores_nothing(client: Client) -> None:
    response = deliver(client, event("charge.succeeded", {"id": "ch_1", "object": "charge"}), signed=False)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_signature"
    assert WebhookEventTrigger.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["{not json", '{"type": "charge.succeeded"}', "[]"])
def test_malformed_bodies_are_400(client: Client, body: str) -> None:
    response = deliver(client, body)
    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0


@pytest.mark.django_db
def test_unknown_uuid_is_404(client: Client) -> None:
    response = client.post(
        "/djstripe/webhook/00000000-0000-0000-0000-000000000000/",
        data="{}",
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE="t=1,v1=x",
    )
    assert response.status_code == 404


@pytest.mark.django_db
def test_an_unknown_event_type_is_a_recorded_no_op(
    client: Client, stripe_standin: StandinServer, django_capture_on_commit_callbacks: Any
) -> None:
    payload = event("issuing_card.shipped", {"id": "ic_1", "object": "issuing.card"})
    response = _deliver(client, payload, django_capture_on_commit_callbacks)
    assert response.status_code == 200
    assert list(StripeEvent.objects.values_list("type", "status")) == [("issuing_card.shipped", "done")]
    assert Payment.objects.count() == 0


@pytest.mark.django_db
def test_a_failure_is_recorded_and_reprocess_recovers_it(
    client: Client, pending_payment: Payment, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given Stripe is unreachable while the event is processed (dj-stripe must re-read the object)
    intent = _confirm_at_stripe(pending_payment)
    standin_url = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = "http://127.0.0.1:1"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_gateway.configure_sdk_globals()
    _deliver(client, event("payment_intent.succeeded", intent), django_capture_on_commit_callbacks)

    # then the failure is kept with its error, and nothing else changed
    row = StripeEvent.objects.get()
    assert (row.status, row.attempts) == ("failed", 1)
    assert "APIConnectionError" in row.last_error
    pending_payment.refresh_from_db()
    assert pending_payment.status == "requires_payment_method"

    # when Stripe is back and staff press "reprocess"
    settings.STRIPE_API_BASE = standin_url
    stripe_gateway.configure_sdk_globals()
    with django_capture_on_commit_callbacks(execute=True):
        assert stripe_event_reprocess(stripe_event_pks=[row.pk], actor=None) == 1

    # then it is done and the payment succeeded
    row.refresh_from_db()
    pending_payment.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == ("done", 2, "")
    assert pending_payment.status == "succeeded"
    assert SECRET.startswith("whsec_")


@pytest.mark.django_db
def test_refund_updated_for_a_refund_made_elsewhere_creates_our_row_once(
    client: Client, pending_payment: Payment, received: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given a paid payment refunded in Stripe's dashboard
    intent = _confirm_at_stripe(pending_payment)
    pending_payment.refresh_from_db()
    remote = stripe_gateway.client().v1.refunds.create({"payment_intent": intent.id, "amount": 200})

    # when refund.created and refund.updated both arrive
    _deliver(client, event("refund.created", remote), django_capture_on_commit_callbacks)
    _deliver(client, event("refund.updated", remote), django_capture_on_commit_callbacks)

    # then one refund row, and the payment's refunded amount follows
    refund = Refund.objects.get()
    assert (refund.stripe_refund_id, refund.amount, refund.status) == (remote.id, 200, "succeeded")
    pending_payment.refresh_from_db()
    assert pending_payment.amount_refunded == 200
    assert received == [("refunded", 200)]


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["123", "null", '"text"', '{"id": 5, "livemode": false}'])
def test_signed_bodies_that_are_not_events_are_400_not_500(client: Client, body: str) -> None:
    response = deliver(client, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhook"
    assert StripeEvent.objects.count() == 0


@pytest.mark.django_db
def test_the_debug_secret_override_header_is_not_honoured(client: Client, settings: Any) -> None:
    # given DEBUG on (as under `make run`) and an event signed with a secret of the attacker's choice
    settings.DEBUG = True
    payload = event("charge.succeeded", {"id": "ch_forged", "object": "charge"})
    response = deliver(
        client, payload, secret="whsec_attacker", HTTP_X_DJSTRIPE_WEBHOOK_SECRET="whsec_attacker"
    )

    # then it is refused like any bad signature
    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0


@pytest.mark.django_db
def test_the_sweep_queues_events_that_were_never_queued_or_whose_worker_died(
    client: Client, pending_payment: Payment, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given an accepted event whose queueing failed (the broker was down), two minutes ago
    from datetime import timedelta

    from django.utils import timezone

    from billing.stripe.services import stripe_events_sweep

    intent = _confirm_at_stripe(pending_payment)
    response = deliver(client, event("payment_intent.succeeded", intent))  # on_commit never runs here
    assert response.status_code == 200
    row = StripeEvent.objects.get()
    StripeEvent.objects.filter(pk=row.pk).update(received_at=timezone.now() - timedelta(minutes=3))
    # and a second one left "processing" by a worker that died
    dead = StripeEvent.objects.create(
        stripe_event_id="evt_dead_worker",
        type="payment_intent.succeeded",
        status=StripeEvent.Status.PROCESSING,
        started_at=timezone.now() - timedelta(minutes=11),
        trigger=row.trigger,
    )

    # when the beat sweep runs
    queued = stripe_events_sweep()

    # then both were processed (the same event's object twice: its effect once)
    assert queued == 2
    assert sorted(StripeEvent.objects.values_list("status", "attempts")) == [("done", 1), ("done", 1)]
    pending_payment.refresh_from_db()
    assert pending_payment.status == "succeeded"
    assert dead.pk != row.pk


@pytest.mark.django_db
def test_the_sweep_reaches_a_dead_worker_s_row_behind_a_backlog_of_waiting_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a row left "processing" by a worker that died, then more stale pending rows (still
    # queued, merely waiting behind a backlog) than one sweep queues
    from datetime import timedelta

    from django.utils import timezone

    from billing.stripe import services

    now = timezone.now()
    dead = StripeEvent.objects.create(
        stripe_event_id="evt_dead_worker",
        type="balance.available",
        status=StripeEvent.Status.PROCESSING,
        started_at=now - timedelta(minutes=11),
    )
    StripeEvent.objects.filter(pk=dead.pk).update(received_at=now - timedelta(minutes=12))
    waiting = StripeEvent.objects.bulk_create(
        StripeEvent(stripe_event_id=f"evt_waiting_{n}", type="balance.available") for n in range(501)
    )
    StripeEvent.objects.filter(pk__in=[row.pk for row in waiting]).update(
        received_at=now - timedelta(minutes=5)
    )
    queued: list[int] = []
    monkeypatch.setattr(services, "_publish", queued.append)

    # when the beat sweep runs
    count = services.stripe_events_sweep()

    # then the oldest come first: the dead worker's row is queued again
    assert count == 500
    assert queued[0] == dead.pk


@pytest.mark.django_db
def test_the_sweep_reaches_a_lost_row_behind_older_failed_ones_waiting_out_their_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given more stale failed rows (older, their long retries pending) than one sweep queues, and a
    # newer pending row that was never queued
    from datetime import timedelta

    from django.utils import timezone

    from billing.stripe import services

    now = timezone.now()
    failed = StripeEvent.objects.bulk_create(
        StripeEvent(stripe_event_id=f"evt_failed_{n}", type="balance.available", status="failed")
        for n in range(3)
    )
    StripeEvent.objects.filter(pk__in=[row.pk for row in failed]).update(
        received_at=now - timedelta(hours=1), started_at=now - timedelta(minutes=20)
    )
    lost = StripeEvent.objects.create(stripe_event_id="evt_lost", type="balance.available")
    StripeEvent.objects.filter(pk=lost.pk).update(received_at=now - timedelta(minutes=5))
    queued: list[int] = []
    monkeypatch.setattr(services, "_publish", queued.append)
    monkeypatch.setattr(services, "SWEEP_LIMIT", 2)

    # when the beat sweep runs
    count = services.stripe_events_sweep()

    # then the lost row comes first, the oldest failed one fills the rest
    assert (count, queued) == (2, [lost.pk, failed[0].pk])
