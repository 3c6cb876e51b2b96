"""The dev Stripe stand-in, driven through the official SDK over HTTP (no mocks, no database)."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import requests
import stripe
from stripe.params import PriceCreateParams

from devtools import stripe_standin
from devtools.testing import StandinServer

API_KEY = "sk_test_" + "x" * 24
WEBHOOK_SECRET = "whsec_standin_tests"
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
# What dj-stripe 2.11 asks for when it re-fetches a checkout session.
DJSTRIPE_SESSION_EXPANDS = ["line_items", "total_details.breakdown", "line_items.data.discounts"]
Webhooks = tuple[str, "queue.Queue[tuple[bytes, str]]"]


@pytest.fixture
def client(standin: StandinServer) -> stripe.StripeClient:
    standin.reset()
    return stripe.StripeClient(API_KEY, base_addresses={"api": standin.url})


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    """A throwaway receiver on 127.0.0.1 that queues (body, Stripe-Signature) of each POST."""
    received: queue.Queue[tuple[bytes, str]] = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put((body, self.headers["Stripe-Signature"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", received
    server.shutdown()
    server.server_close()


def _recurring_price(
    client: stripe.StripeClient,
    lookup_key: str = "basic_monthly",
) -> stripe.Price:
    product = client.v1.products.create({"name": "Basic"})
    return client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
            "lookup_key": lookup_key,
            "metadata": {"plan_code": "basic"},
        }
    )


def _one_time_price(client: stripe.StripeClient) -> stripe.Price:
    product = client.v1.products.create({"name": "Credits"})
    return client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 500})


def _subscription_session(client: stripe.StripeClient, price_id: str) -> stripe.checkout.Session:
    return client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "line_items": [{"price": price_id, "quantity": 1}],
            "customer_email": "ada@example.com",
            "client_reference_id": "user-7",
            "metadata": {"order": "o-1"},
            "subscription_data": {"metadata": {"user_id": "7"}},
            "success_url": "http://app.test/done?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "http://app.test/cancel",
        }
    )


def _payment_session(client: stripe.StripeClient, price_id: str) -> stripe.checkout.Session:
    return client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": price_id, "quantity": 2}],
            "payment_intent_data": {"metadata": {"order": "o-2"}},
            "success_url": "http://app.test/done",
        }
    )


def _pay(session: stripe.checkout.Session, card: str) -> requests.Response:
    return requests.post(f"{session.url}/complete", json={"card": card}, timeout=5)


def _next_event(
    received: queue.Queue[tuple[bytes, str]], event_type: str, object_id: str
) -> tuple[bytes, str]:
    deadline = time.monotonic() + 5  # localstripe sends ~1 s after the change
    while (left := deadline - time.monotonic()) > 0:
        try:
            body, signature = received.get(timeout=left)
        except queue.Empty:
            break
        event = json.loads(body)
        if event["type"] == event_type and event["data"]["object"]["id"] == object_id:
            return body, signature
    raise AssertionError(f"no {event_type} webhook for {object_id} within 5 s")


def test_account_is_retrieved_like_stripes(client: stripe.StripeClient) -> None:
    # when dj-stripe asks for the key's owner account
    account = client.v1.accounts.retrieve_current()

    # then it gets a Stripe-shaped account
    assert account.id == stripe_standin.ACCOUNT_ID
    assert account.object == "account"
    assert account.charges_enabled is True
    assert account.settings.dashboard.display_name == "Stripe stand-in"


def test_price_is_created_retrieved_and_listed_by_lookup_key(
    client: stripe.StripeClient,
) -> None:
    # given a recurring price and a one-time price
    price = _recurring_price(client, lookup_key="pro_monthly")
    _one_time_price(client)

    # when it is retrieved and prices are listed by lookup key
    fetched = client.v1.prices.retrieve(price.id, {"expand": ["product"]})
    listed = client.v1.prices.list({"lookup_keys": ["pro_monthly"]})

    # then both answer the price as Stripe shapes it
    assert price.id.startswith("price_")
    assert (fetched.object, fetched.type, fetched.unit_amount) == ("price", "recurring", 2000)
    assert fetched.recurring.interval == "month"
    assert fetched.recurring.interval_count == 1
    assert fetched.metadata.to_dict() == {"plan_code": "basic"}
    assert fetched.product.name == "Basic"
    assert [p.id for p in listed.data] == [price.id]


def test_checkout_session_in_subscription_mode_is_retrieved_with_djstripe_expands(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    # given a subscription-mode session
    price = _recurring_price(client)
    session = _subscription_session(client, price.id)

    # when dj-stripe re-fetches it
    fetched = client.v1.checkout.sessions.retrieve(session.id, {"expand": DJSTRIPE_SESSION_EXPANDS})

    # then it is open, points at the stand-in's page, and carries the expanded fields
    assert (session.status, session.payment_status, session.mode) == (
        "open",
        "unpaid",
        "subscription",
    )
    assert session.url == f"{standin.url}/_dev/checkout/{session.id}"
    assert "line_items" not in session
    assert session.amount_total == 2000
    assert fetched.line_items.data[0].price.id == price.id
    assert fetched.line_items.data[0].quantity == 1
    assert fetched.line_items.data[0].discounts == []
    assert fetched.total_details.breakdown.to_dict() == {"discounts": [], "taxes": []}


def test_checkout_session_in_payment_mode_lists_its_line_items(client: stripe.StripeClient) -> None:
    # given a payment-mode session for 2 x 5.00
    price = _one_time_price(client)
    session = _payment_session(client, price.id)

    # when its line items are listed
    items = client.v1.checkout.sessions.line_items.list(session.id)

    # then the session totals them
    assert (session.mode, session.currency, session.amount_total) == ("payment", "usd", 1000)
    assert [(i.price.id, i.quantity, i.amount_total) for i in items.data] == [(price.id, 2, 1000)]


def test_paying_a_subscription_session_with_a_good_card_starts_the_subscription(
    client: stripe.StripeClient,
) -> None:
    # given an open subscription-mode session
    price = _recurring_price(client)
    session = _subscription_session(client, price.id)

    # when the buyer pays with a good test card
    response = _pay(session, GOOD_CARD)

    # then the session is complete and the subscription is active, with subscription_data.metadata
    assert response.status_code == 200
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status) == ("complete", "paid")
    subscription = client.v1.subscriptions.retrieve(done.subscription)
    assert subscription.status == "active"
    assert subscription.customer == done.customer
    assert subscription.metadata.to_dict() == {"user_id": "7"}
    assert subscription["items"].data[0].price.id == price.id
    assert client.v1.customers.retrieve(done.customer).email == "ada@example.com"


def test_paying_a_payment_session_with_a_good_card_succeeds_its_payment_intent(
    client: stripe.StripeClient,
) -> None:
    # given an open payment-mode session
    session = _payment_session(client, _one_time_price(client).id)

    # when the buyer pays with a good test card
    response = _pay(session, GOOD_CARD)

    # then the session is paid by a succeeded payment intent for its total
    assert response.status_code == 200
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status, done.subscription) == ("complete", "paid", None)
    intent = client.v1.payment_intents.retrieve(done.payment_intent)
    assert (intent.status, intent.amount, intent.customer) == ("succeeded", 1000, done.customer)
    assert intent.metadata.to_dict() == {"order": "o-2"}


def test_a_declined_card_answers_402_and_leaves_the_session_open(
    client: stripe.StripeClient,
) -> None:
    # given an open subscription-mode session
    session = _subscription_session(client, _recurring_price(client).id)

    # when the buyer pays with Stripe's declined test card
    response = _pay(session, DECLINED_CARD)

    # then Stripe's card error comes back and nothing is subscribed
    assert response.status_code == 402
    assert response.json()["error"] == {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "generic_decline",
        "message": "Your card was declined.",
        "param": "card",
    }
    still = client.v1.checkout.sessions.retrieve(session.id)
    assert (still.status, still.payment_status, still.subscription) == ("open", "unpaid", None)
    assert client.v1.subscriptions.list().data == []


def test_the_checkout_page_form_pays_and_redirects_to_success_url(
    client: stripe.StripeClient,
) -> None:
    # given an open session and its page
    session = _subscription_session(client, _recurring_price(client).id)
    page = requests.get(session.url, timeout=5)

    # when the page's form is posted with the prefilled card
    response = requests.post(
        f"{session.url}/complete", data={"card": GOOD_CARD}, allow_redirects=False, timeout=5
    )

    # then the browser goes to success_url with the session id filled in
    assert page.status_code == 200
    assert "<h1>Subscribe to Basic</h1>" in page.text
    assert "<strong>$20.00/month</strong>" in page.text
    assert 'value="4242424242424242"' in page.text
    assert response.status_code == 303
    assert response.headers["Location"] == f"http://app.test/done?session={session.id}"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"


def test_an_unknown_id_raises_a_stripe_style_404(client: stripe.StripeClient) -> None:
    # when an object that does not exist is retrieved
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.checkout.sessions.retrieve("cs_test_missing")

    # then the SDK raises Stripe's resource_missing error
    assert raised.value.http_status == 404
    assert raised.value.code == "resource_missing"
    assert raised.value.param == "id"
    assert raised.value.user_message == "No such checkout.session: 'cs_test_missing'"


def test_checkout_session_completed_webhook_is_delivered_signed(
    client: stripe.StripeClient, standin: StandinServer, webhooks: Webhooks
) -> None:
    # given a webhook registered through localstripe's own config route
    url, received = webhooks
    config = f"{standin.url}/_config/webhooks/standin-test"
    requests.post(config, data={"url": url, "secret": WEBHOOK_SECRET}, timeout=5).raise_for_status()
    try:
        session = _subscription_session(client, _recurring_price(client).id)

        # when the session is paid
        _pay(session, GOOD_CARD).raise_for_status()
        body, signature = _next_event(received, "checkout.session.completed", session.id)
    finally:
        requests.delete(config, timeout=5)

    # then the event verifies with the endpoint secret and carries the completed session
    event = stripe.Webhook.construct_event(body, signature, WEBHOOK_SECRET)
    completed = event.data.object
    assert event.type == "checkout.session.completed"
    assert (completed.status, completed.payment_status) == ("complete", "paid")
    assert completed.client_reference_id == "user-7"
    assert completed.metadata.to_dict() == {"order": "o-1"}
    assert completed.subscription.startswith("sub_")


def test_a_subscription_can_be_created_with_items_price(client: stripe.StripeClient) -> None:
    # given a customer with a default card
    price = _recurring_price(client)
    customer = client.v1.customers.create({"email": "bob@example.com"})
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(
        customer.id,
        {"invoice_settings": {"default_payment_method": card.id}},
    )

    # when they subscribe to the price directly
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]},
    )

    # then the subscription is active on that price
    assert subscription.status == "active"
    assert subscription["items"].data[0].price.id == price.id
    assert subscription["items"].data[0].subscription == subscription.id


def test_djstripe_refetches_of_invoice_charge_and_price_succeed(
    client: stripe.StripeClient,
) -> None:
    # given a paid subscription session
    price = _recurring_price(client)
    session = _subscription_session(client, price.id)
    _pay(session, GOOD_CARD).raise_for_status()
    done = client.v1.checkout.sessions.retrieve(session.id)

    # when dj-stripe re-fetches the objects its handlers sync, with its expands
    invoice = client.v1.invoices.retrieve(
        done.invoice,
        {"expand": ["discounts", "lines.data.discounts"]},
    )
    intent = client.v1.payment_intents.retrieve(invoice.payment_intent)
    charge = client.v1.charges.retrieve(
        intent.latest_charge.id,
        {"expand": ["balance_transaction"]},
    )
    fetched = client.v1.prices.retrieve(
        price.id,
        {"expand": ["currency_options", "product", "tiers"]},
    )

    # then each answers with the fields dj-stripe reads
    assert (invoice.status, invoice.discounts, invoice.default_tax_rates) == ("paid", [], [])
    assert invoice.lines.data[0].discounts == []
    assert charge.balance_transaction.object == "balance_transaction"
    assert fetched.currency_options.usd.unit_amount == 2000
    assert fetched.tiers is None


def test_an_idempotency_key_replays_the_first_answer(client: stripe.StripeClient) -> None:
    # given a product
    product = client.v1.products.create({"name": "Basic"})
    params: PriceCreateParams = {
        "product": product.id,
        "currency": "eur",
        "unit_amount": 900,
    }

    # when the same price is created twice with one idempotency key
    first = client.v1.prices.create(params, {"idempotency_key": "price:basic:eur"})
    second = client.v1.prices.create(params, {"idempotency_key": "price:basic:eur"})

    # then Stripe's answer is replayed and a single price exists
    assert second.id == first.id
    assert [p.id for p in client.v1.prices.list().data] == [first.id]


def test_the_cli_listens_on_its_host_and_registers_its_webhook(webhooks: Webhooks) -> None:
    # given the stand-in started from the command line with a webhook
    url, received = webhooks
    with socket.socket() as probe:  # a free port for the CLI
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "devtools.stripe_standin",
        "--port",
        str(port),
        "--webhook-url",
        url,
        "--webhook-secret",
        WEBHOOK_SECRET,
    ]
    process = subprocess.Popen(
        command,
        cwd=Path(__file__).parents[2],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first_line = process.stderr.readline()
        cli_url = f"http://127.0.0.1:{port}"
        cli_client = stripe.StripeClient(API_KEY, base_addresses={"api": cli_url})

        # when a customer is created there
        customer = cli_client.v1.customers.create({"email": "cli@example.com"})
        body, signature = _next_event(received, "customer.created", customer.id)
    finally:
        process.terminate()
        process.wait(timeout=5)

    # then it said where it listens, and its webhook arrived signed
    assert f"Stripe stand-in listening on http://127.0.0.1:{port}" in first_line
    event = stripe.Webhook.construct_event(body, signature, WEBHOOK_SECRET)
    assert event.type == "customer.created"


def test_the_cli_refuses_to_listen_on_every_interface() -> None:
    # when asked to bind all interfaces, then it stops with a usage error
    with pytest.raises(SystemExit) as raised:
        stripe_standin.main(["--host", "0.0.0.0"])  # noqa: S104 (refusal under test)
    assert raised.value.code == 2


def _trial_session(client: stripe.StripeClient, days: int) -> stripe.checkout.Session:
    product = client.v1.products.create({"name": "Pro"})
    price = client.v1.prices.create(
        {"product": product.id, "currency": "eur", "unit_amount": 899, "recurring": {"interval": "month"}}
    )
    return client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "subscription_data": {"trial_period_days": days},
            "success_url": "http://app.test/done",
            "cancel_url": "http://app.test/cancel",
        }
    )


@pytest.mark.parametrize(
    ("days", "terms"),
    [(14, "14 days free, then €8.99/month"), (1, "1 day free, then €8.99/month"), (0, "€8.99/month")],
)
def test_the_payment_page_shows_the_plan_its_interval_and_the_trial(
    client: stripe.StripeClient, days: int, terms: str
) -> None:
    page = requests.get(_trial_session(client, days).url, timeout=5).text
    assert "<h1>Subscribe to Pro</h1>" in page
    assert f"<strong>{terms}</strong>" in page


def test_a_one_time_payment_page_shows_the_amount_once(client: stripe.StripeClient) -> None:
    page = requests.get(_payment_session(client, _one_time_price(client).id).url, timeout=5).text
    assert "<h1>Pay for Credits</h1>" in page
    assert "<strong>$10.00</strong>" in page


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        (DECLINED_CARD, "the bank declined it without giving a reason <small>(generic_decline)</small>"),
        ("4000000000009995", "insufficient funds <small>(insufficient_funds)</small>"),
        ("4000000000009987", "the card was reported lost <small>(lost_card)</small>"),
        ("1234", "the card number is incorrect <small>(incorrect_number)</small>"),
    ],
)
def test_a_decline_on_the_page_says_why(client: stripe.StripeClient, card: str, reason: str) -> None:
    session = _trial_session(client, 14)
    response = requests.post(f"{session.url}/complete", data={"card": card}, timeout=5)
    assert response.status_code == 402
    assert f"</strong>: {reason}</p>" in response.text
    assert "<strong>14 days free, then €8.99/month</strong>" in response.text  # still on the page


def test_the_demo_return_urls_are_pages(client: stripe.StripeClient, standin: StandinServer) -> None:
    session = _trial_session(client, 14)
    _pay(session, GOOD_CARD)
    success = requests.get(f"{standin.url}/_dev/return/success", params={"session_id": session.id}, timeout=5)
    cancel = requests.get(f"{standin.url}/_dev/return/cancel", timeout=5)
    assert (success.status_code, success.headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert "<h1>Thank you</h1>" in success.text
    assert "14 days free, then €8.99/month for Pro." in success.text
    assert (cancel.status_code, "<h1>Checkout cancelled</h1>" in cancel.text) == (200, True)


def test_sessions_are_listed_by_status_and_only_an_open_one_can_be_expired(
    client: stripe.StripeClient,
) -> None:
    # given a paid session and an open one
    price = _recurring_price(client)
    paid = _subscription_session(client, price.id)
    _pay(paid, GOOD_CARD)
    open_ = _subscription_session(client, price.id)

    # when the open ones are listed and expired, and the paid one is asked to expire too
    listed = [s.id for s in client.v1.checkout.sessions.list({"status": "open"}).data]
    expired = client.v1.checkout.sessions.expire(open_.id)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.expire(paid.id)

    # then only the open one was listed and expired, and it can no longer be paid
    assert listed == [open_.id]
    assert expired.status == "expired"
    assert "this one is complete" in str(refused.value.user_message)
    assert _pay(open_, GOOD_CARD).status_code == 400
    customer = client.v1.checkout.sessions.retrieve(paid.id).customer
    assert [s.id for s in client.v1.checkout.sessions.list({"customer": customer}).data] == [paid.id]
