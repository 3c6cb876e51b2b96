"""The stand-in's renewals and invoice actions, driven through the official SDK over HTTP."""

from __future__ import annotations

import calendar
import json
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import requests
import stripe

from devtools import standin_clock
from devtools.testing import StandinServer

API_KEY = "sk_test_" + "x" * 24
DAY = 86400


@pytest.fixture
def client(standin: StandinServer) -> stripe.StripeClient:
    standin.reset()
    return stripe.StripeClient(API_KEY, base_addresses={"api": standin.url}, max_network_retries=0)


@pytest.fixture
def events(standin: StandinServer) -> Iterator[queue.Queue[dict]]:
    """Every webhook the stand-in sends during the test, parsed."""
    received: queue.Queue[dict] = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = f"{standin.url}/_config/webhooks/clock-test"
    requests.post(
        config, data={"url": f"http://127.0.0.1:{server.server_port}/", "secret": "whsec_x"}, timeout=5
    )
    yield received
    requests.delete(config, timeout=5)
    server.shutdown()
    server.server_close()


def _wait_for(received: queue.Queue[dict], event_type: str, object_id: str) -> dict:
    deadline = time.monotonic() + 5  # localstripe sends ~1 s after the change
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = received.get(timeout=left)
        except queue.Empty:
            break
        if event["type"] == event_type and event["data"]["object"]["id"] == object_id:
            return event
    raise AssertionError(f"no {event_type} for {object_id} within 5 s")


def _subscribe(
    client: stripe.StripeClient, payment_method: str, **subscription_fields: Any
) -> stripe.Subscription:
    product = client.v1.products.create({"name": "Basic"})
    price = client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 2000, "recurring": {"interval": "month"}}
    )
    customer = client.v1.customers.create({"email": "ada@example.com"})
    pm = client.v1.payment_methods.retrieve(payment_method)
    client.v1.payment_methods.attach(pm.id, {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": pm.id}})
    params: Any = {"customer": customer.id, "items": [{"price": price.id}], **subscription_fields}
    return client.v1.subscriptions.create(params)


def _advance(standin: StandinServer, days: int) -> list[str]:
    answer = requests.post(f"{standin.url}/_dev/clock/advance", json={"days": days}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()["invoices"]


def test_advancing_past_the_period_end_renews_and_pays_with_a_good_card(
    client: stripe.StripeClient, standin: StandinServer, events: queue.Queue[dict]
) -> None:
    # given an active monthly subscription paid by a good card
    subscription = _subscribe(client, "pm_card_visa")
    first_end = subscription["current_period_end"]
    # when the clock moves 32 days on
    (invoice_id,) = _advance(standin, 32)
    # then a cycle invoice for the next period was issued and paid, and Stripe's events sent
    invoice = client.v1.invoices.retrieve(invoice_id)
    assert (invoice.status, invoice.billing_reason, invoice.amount_paid) == (
        "paid",
        "subscription_cycle",
        2000,
    )
    assert invoice.lines.data[0].period.start == first_end
    _wait_for(events, "invoice.payment_succeeded", invoice_id)
    renewed = client.v1.subscriptions.retrieve(subscription.id)
    assert (renewed.status, renewed["current_period_start"]) == ("active", first_end)


def test_the_charge_customer_fail_card_attaches_then_fails_the_renewal(
    client: stripe.StripeClient, standin: StandinServer, events: queue.Queue[dict]
) -> None:
    # given a subscription whose first invoice was paid before the card started failing
    subscription = _subscribe(client, "pm_card_visa")
    customer = client.v1.customers.retrieve(subscription.customer)
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": failing.id}})
    # when the renewal comes
    (invoice_id,) = _advance(standin, 31)
    # then the invoice stays open, the subscription is past_due and payment_failed was sent
    invoice = client.v1.invoices.retrieve(invoice_id)
    assert (invoice.status, invoice.attempt_count, invoice.next_payment_attempt) == ("open", 1, None)
    event = _wait_for(events, "invoice.payment_failed", invoice_id)
    assert event["data"]["object"]["status"] == "open"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"
    # and paying it again fails with a card error carrying Stripe's codes
    with pytest.raises(stripe.CardError) as declined:
        client.v1.invoices.pay(invoice_id)
    assert (declined.value.code, declined.value.error.decline_code) == ("card_declined", "generic_decline")
    assert client.v1.invoices.retrieve(invoice_id).attempt_count == 2


def test_a_hard_decline_carries_its_decline_and_advice_codes(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    # given a card told to fail later charges as stolen, "do not try again"
    subscription = _subscribe(client, "pm_card_visa")
    pm = client.v1.customers.retrieve(subscription.customer).invoice_settings.default_payment_method
    requests.post(
        f"{standin.url}/_dev/payment_methods/{pm}/decline_later",
        json={"decline_code": "stolen_card", "advice_code": "do_not_try_again", "network_advice_code": "03"},
        timeout=5,
    ).raise_for_status()
    (invoice_id,) = _advance(standin, 31)
    # when the invoice is paid again
    with pytest.raises(stripe.CardError) as declined:
        client.v1.invoices.pay(invoice_id)
    # then the error names the decline and the advice
    error = declined.value.error
    assert (error.decline_code, error.advice_code, error.network_advice_code) == (
        "stolen_card",
        "do_not_try_again",
        "03",
    )


def test_a_failed_renewal_leaves_the_card_codes_on_the_invoice_payment_intent(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    # given a card told to fail later charges as stolen, "do not try again"
    subscription = _subscribe(client, "pm_card_visa")
    pm = client.v1.customers.retrieve(subscription.customer).invoice_settings.default_payment_method
    requests.post(
        f"{standin.url}/_dev/payment_methods/{pm}/decline_later",
        json={"decline_code": "stolen_card", "advice_code": "do_not_try_again", "network_advice_code": "03"},
        timeout=5,
    ).raise_for_status()
    # when the renewal fails
    (invoice_id,) = _advance(standin, 31)
    # then the invoice names its payment intent, as older API versions do, and lists it under
    # `payments` only when expanded, as versions from 2025-03-31 do
    invoice = client.v1.invoices.retrieve(invoice_id)
    assert invoice.payment_intent.startswith("pi_")
    assert "payments" not in invoice
    payments = client.v1.invoices.retrieve(invoice_id, {"expand": ["payments"]}).payments.data
    assert [(p.is_default, p.status, p.payment.payment_intent) for p in payments] == [
        (True, "open", invoice.payment_intent)
    ]
    # and the intent's last_payment_error carries the card's codes, as Stripe's does
    error = client.v1.payment_intents.retrieve(invoice.payment_intent).last_payment_error
    assert (error.type, error.code, error.decline_code, error.advice_code, error.network_advice_code) == (
        "card_error",
        "card_declined",
        "stolen_card",
        "do_not_try_again",
        "03",
    )
    assert error.payment_method.id == pm


def test_an_injected_fault_answers_its_path_then_lets_it_through(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    # given an open invoice, and a void that Stripe will answer 500 twice
    subscription = _subscribe(client, "pm_card_chargeCustomerFail")
    invoice_id = subscription.latest_invoice
    path = f"/v1/invoices/{invoice_id}/void"
    requests.post(
        f"{standin.url}/_dev/faults", json={"path": path, "status": 500, "times": 2}, timeout=5
    ).raise_for_status()
    # when it is voided three times under one key
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.invoices.void_invoice(invoice_id, {}, {"idempotency_key": "end-1"})
        assert client.v1.invoices.retrieve(invoice_id).status == "open"
    voided = client.v1.invoices.void_invoice(invoice_id, {}, {"idempotency_key": "end-1"})
    # then the third went through, and all three reached the stand-in with the key
    assert voided.status == "void"
    voids = [entry for entry in standin_clock.requests_log() if entry[1] == path]
    assert voids == [("POST", path, "end-1")] * 3


def test_a_new_card_pays_the_open_invoice_and_the_subscription_is_active_again(
    client: stripe.StripeClient, standin: StandinServer, events: queue.Queue[dict]
) -> None:
    # given a renewal that failed
    subscription = _subscribe(client, "pm_card_visa")
    customer_id = subscription.customer
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": customer_id})
    client.v1.customers.update(customer_id, {"invoice_settings": {"default_payment_method": failing.id}})
    (invoice_id,) = _advance(standin, 31)
    good = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer_id})
    # when the invoice is paid with the new card, under an idempotency key, twice
    first = client.v1.invoices.pay(invoice_id, {"payment_method": good.id}, {"idempotency_key": "k-1"})
    again = client.v1.invoices.pay(invoice_id, {"payment_method": good.id}, {"idempotency_key": "k-1"})
    # then it was paid once (the second answer is the first one replayed)
    assert (first.status, again.status, again.amount_paid) == ("paid", "paid", 2000)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    _wait_for(events, "invoice.payment_succeeded", invoice_id)
    pays = [entry for entry in standin_clock.requests_log() if entry[1].endswith("/pay")]
    assert pays == [("POST", f"/v1/invoices/{invoice_id}/pay", "k-1")] * 2
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(invoice_id)


def test_an_open_invoice_is_voided_or_marked_uncollectible_with_its_events(
    client: stripe.StripeClient, standin: StandinServer, events: queue.Queue[dict]
) -> None:
    # given two failed renewals of two subscriptions
    invoices = []
    for _ in range(2):
        subscription = _subscribe(client, "pm_card_chargeCustomerFail")
        invoices.append(client.v1.invoices.retrieve(subscription.latest_invoice))
    # (the first invoice of a failing card never paid; each is open)
    assert [invoice.status for invoice in invoices] == ["open", "open"]
    # when one is voided and the other marked uncollectible
    voided = client.v1.invoices.void_invoice(invoices[0].id)
    uncollectible = client.v1.invoices.mark_uncollectible(invoices[1].id)
    # then each says so, and Stripe's events were sent
    assert (voided.status, uncollectible.status) == ("void", "uncollectible")
    _wait_for(events, "invoice.voided", voided.id)
    # and a void invoice can no longer be paid, nor voided again
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(voided.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.void_invoice(voided.id)


def test_a_subscription_set_to_cancel_at_period_end_ends_instead_of_renewing(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    subscription = _subscribe(client, "pm_card_visa")
    client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    assert _advance(standin, 40) == []
    assert client.v1.subscriptions.retrieve(subscription.id).status == "canceled"


def test_the_clock_refuses_to_go_back(standin: StandinServer, client: stripe.StripeClient) -> None:
    answer = requests.post(f"{standin.url}/_dev/clock/advance", json={"days": -1}, timeout=5)
    assert answer.status_code == 400
    before = requests.get(f"{standin.url}/_dev/clock", timeout=5).json()["offset"]
    assert before == 0


def test_attaching_a_card_sends_payment_method_attached(
    client: stripe.StripeClient, events: queue.Queue[dict]
) -> None:
    customer = client.v1.customers.create({"email": "ada@example.com"})
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    event = _wait_for(events, "payment_method.attached", card.id)
    assert event["data"]["object"]["customer"] == customer.id


def test_the_charge_customer_fail_card_starts_a_trial_at_checkout_then_fails_the_renewal(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    # given a subscription-mode session with a trial
    product = client.v1.products.create({"name": "Pro"})
    price = client.v1.prices.create(
        {"product": product.id, "currency": "eur", "unit_amount": 899, "recurring": {"interval": "month"}}
    )
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "customer_email": "ada@example.com",
            "subscription_data": {"trial_period_days": 14},
            "success_url": "http://app.test/done",
        }
    )
    # when the buyer pays with 4000 0000 0000 0341
    response = requests.post(f"{session.url}/complete", json={"card": "4000000000000341"}, timeout=5)
    # then the card is accepted and the trial runs; the first renewal's charge fails
    assert response.status_code == 200
    subscription_id = client.v1.checkout.sessions.retrieve(session.id).subscription
    assert client.v1.subscriptions.retrieve(subscription_id).status == "trialing"
    (invoice_id,) = _advance(standin, 32)
    assert client.v1.invoices.retrieve(invoice_id).status == "open"
    assert client.v1.subscriptions.retrieve(subscription_id).status == "past_due"


def test_a_trial_is_the_first_period_and_its_end_is_the_first_invoice(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    # given a monthly subscription (20.00) with a 14-day trial, paid by a good card
    subscription = _subscribe(client, "pm_card_visa", trial_period_days=14)
    trial_end = subscription["trial_end"]
    # when the clock moves past the trial's end
    (invoice_id,) = _advance(standin, 15)
    # then the trial was the first period, as in Stripe, and the first charge opened the next
    invoice = client.v1.invoices.retrieve(invoice_id)
    renewed = client.v1.subscriptions.retrieve(subscription.id)
    assert (subscription.status, subscription["current_period_start"]) == (
        "trialing",
        subscription.start_date,
    )
    assert subscription["current_period_end"] == trial_end == subscription.start_date + 14 * DAY
    assert (invoice.status, invoice.amount_paid, invoice.lines.data[0].period.start) == (
        "paid",
        2000,
        trial_end,
    )
    assert (renewed.status, renewed["current_period_start"]) == ("active", trial_end)
    ended = datetime.fromtimestamp(trial_end, UTC)
    year, month = ended.year + ended.month // 12, ended.month % 12 + 1
    last_day = calendar.monthrange(year, month)[1]
    a_month_on = ended.replace(year=year, month=month, day=min(ended.day, last_day))
    assert renewed["current_period_end"] == int(a_month_on.timestamp())


def test_a_price_of_another_interval_during_a_trial_is_charged_once(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    # given a monthly subscription in its 14-day trial, paid by a good card, and a yearly price
    subscription = _subscribe(client, "pm_card_visa", trial_period_days=14)
    product = subscription["items"].data[0].price.product
    yearly = client.v1.prices.create(
        {"product": product, "currency": "usd", "unit_amount": 20000, "recurring": {"interval": "year"}}
    )
    # when the price changes to the yearly one, and the clock passes the trial's end
    item = subscription["items"].data[0].id
    client.v1.subscriptions.update(subscription.id, {"items": [{"id": item, "price": yearly.id}]})
    renewed = _advance(standin, 15)
    # then the stand-in charged the year once (at the change, as localstripe does), not again
    changed = client.v1.subscriptions.retrieve(subscription.id)
    paid = client.v1.invoices.list({"customer": subscription.customer}).data
    assert renewed == []
    assert [(invoice.amount_paid, invoice.status) for invoice in paid] == [(20000, "paid")]
    start = datetime.fromtimestamp(changed["current_period_start"], UTC)
    a_year_on = start.replace(year=start.year + 1, day=min(start.day, 28 if start.month == 2 else 31))
    assert (changed.status, changed["current_period_end"]) == ("active", int(a_year_on.timestamp()))
