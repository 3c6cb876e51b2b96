"""Processing an inbound Stripe event waits on Stripe outside any transaction: a Stripe that hangs
for the whole timeout holds no database transaction and no row lock meanwhile.

Stripe is the stand-in behind devtools' recording proxy, which holds the chosen read unanswered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client

from billing.models import Payment, Refund, StripeEvent
from billing.payments.services import payment_create
from billing.stripe import gateway as stripe_gateway
from billing.stripe import services
from billing.stripe.tests.events import deliver, event
from devtools.testing import StandinServer, StripeProxy
from payments_project.accounts.tests.factories import UserFactory


@pytest.fixture
def proxy(stripe_standin: StandinServer, settings: Any) -> Iterator[StripeProxy]:
    """Our gateway and dj-stripe's SDK calls both through the proxy, with a short timeout."""
    server = StripeProxy(stripe_standin.url)
    threading.Thread(target=server.serve_forever, name="stripe-proxy", daemon=True).start()
    settings.STRIPE_API_BASE = server.url
    settings.STRIPE_TIMEOUT_SECONDS = 1.0
    settings.STRIPE_MAX_NETWORK_RETRIES = 1
    stripe_gateway.client.cache_clear()
    stripe_gateway.configure_sdk_globals()
    yield server
    server.stop()
    settings.STRIPE_API_BASE = stripe_standin.url
    stripe_gateway.client.cache_clear()
    stripe_gateway.configure_sdk_globals()


def _paid(payment: Payment) -> Any:
    sdk = stripe_gateway.client()
    sdk.v1.payment_intents.update(payment.stripe_payment_intent_id, {"payment_method": "pm_card_visa"})
    return sdk.v1.payment_intents.confirm(payment.stripe_payment_intent_id)


def _intent_succeeded(payment: Payment) -> tuple[dict[str, Any], str]:
    """payment_intent.succeeded: dj-stripe re-reads the intent."""
    intent = _paid(payment)
    return event("payment_intent.succeeded", intent), f"/v1/payment_intents/{intent.id}"


def _charge_refunded(payment: Payment) -> tuple[dict[str, Any], str]:
    """charge.refunded of a paid payment: our handler's fetch lists the charge's refunds."""
    intent = _paid(payment)
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.SUCCEEDED)
    sdk = stripe_gateway.client()
    sdk.v1.refunds.create({"payment_intent": intent.id, "amount": 500})
    latest = intent.latest_charge
    charge = sdk.v1.charges.retrieve(latest if isinstance(latest, str) else latest.id)
    return event("charge.refunded", charge), f"/v1/refunds?charge={charge.id}"


CASES = {"dj-stripe's re-read": _intent_succeeded, "our handler's fetch": _charge_refunded}


def _idle_in_transaction() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE %s AND pid <> pg_backend_pid()",
            ["idle in transaction%"],
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", list(CASES))
def test_a_hanging_stripe_read_holds_no_transaction_and_no_row_lock(
    case: str, proxy: StripeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a payment and its Stripe event in the inbox, not yet processed
    payment = payment_create(user=UserFactory(), amount=1200, currency="USD", description="Mug")
    payload, read_path = CASES[case](payment)
    monkeypatch.setattr(services, "_publish", lambda pk: None)
    assert deliver(Client(), payload).status_code == 200
    row = StripeEvent.objects.get()

    # and a Stripe that accepts the read the processing needs and never answers it
    proxy.hang_reads_under = read_path
    outcome: list[BaseException | StripeEvent] = []

    def process() -> None:
        try:
            outcome.append(services.stripe_event_process(stripe_event_pk=row.pk))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            outcome.append(exc)
        finally:
            connection.close()

    # when a worker processes the event, for the timeout and the SDK's retry
    worker = threading.Thread(target=process)
    worker.start()
    try:
        for _ in range(2):  # the SDK's first try, then its retry
            assert proxy.hung.acquire(timeout=20), "the read never reached Stripe"
            # then meanwhile no transaction is open, and the payment and inbox rows lock at once
            assert _idle_in_transaction() == 0
            with transaction.atomic():
                assert Payment.objects.select_for_update(nowait=True).get(pk=payment.pk).pk == payment.pk
                assert StripeEvent.objects.select_for_update(nowait=True).get(pk=row.pk).pk == row.pk
    finally:
        worker.join(timeout=30)

    # then the attempt failed and is kept for its retry, with nothing applied
    assert isinstance(outcome[0], services.StripeEventFailed)
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("failed", 1)
    assert Refund.objects.count() == 0

    # when Stripe answers again and the retry runs
    proxy.hang_reads_under = None
    services.stripe_event_process(stripe_event_pk=row.pk)

    # then the event is done and applied once
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == ("done", 2, "")
    payment.refresh_from_db()
    assert payment.status == "succeeded"
    if case == "our handler's fetch":
        assert (payment.amount_refunded, Refund.objects.get().amount) == (500, 500)
