"""Subscriptions with metered items in the stand-in, as Stripe has them: a Checkout Session with
a licensed price and metered prices (no quantity), subscriptions with several items, item changes,
and renewal invoices billing the meter's usage. Driven through the official SDK over HTTP."""

from __future__ import annotations

import time

import pytest
import requests
import stripe

from devtools.testing import StandinServer

API_KEY = "sk_test_" + "i" * 24
DAY = 86400


@pytest.fixture
def client(standin: StandinServer) -> stripe.StripeClient:
    standin.reset()
    return stripe.StripeClient(API_KEY, base_addresses={"api": standin.url}, max_network_retries=0)


def _meter(client: stripe.StripeClient, event_name: str) -> str:
    return client.v1.billing.meters.create(
        {"display_name": event_name, "event_name": event_name, "default_aggregation": {"formula": "sum"}}
    ).id


def _prices(client: stripe.StripeClient) -> tuple[str, str, str]:
    """A monthly plan at €20.00, and two metered prices: €0.02 per API call, €0.05 per export."""
    product = client.v1.products.create({"name": "Pro"}).id
    licensed = client.v1.prices.create(
        {"product": product, "currency": "eur", "unit_amount": 2000, "recurring": {"interval": "month"}}
    ).id
    calls, exports = (
        client.v1.prices.create(
            {
                "product": product,
                "currency": "eur",
                "unit_amount": amount,
                "recurring": {"interval": "month", "usage_type": "metered", "meter": _meter(client, name)},
                "metadata": {"feature_name": label, "unit_label": unit},
            }
        ).id
        for name, amount, label, unit in (
            ("api_calls", 2, "API calls", "calls"),
            ("exports", 5, "Exports", "exports"),
        )
    )
    return licensed, calls, exports


def _customer(client: stripe.StripeClient) -> str:
    customer = client.v1.customers.create({"email": "ada@example.com"}).id
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": card.id}})
    return customer


def _usage(client: stripe.StripeClient, event_name: str, customer: str, value: int) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": event_name,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "timestamp": int(time.time()),
        }
    )


def _items(subscription: stripe.Subscription) -> list[tuple[str, str, int | None]]:
    return [
        (item.price.id, item.price.recurring.usage_type, item.get("quantity"))
        for item in subscription["items"].data
    ]


def test_checkout_with_a_metered_price_starts_a_subscription_with_both_items(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    # given a session for the plan and its metered price (no quantity, as Stripe wants)
    licensed, calls, _ = _prices(client)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": client.v1.customers.create({"email": "ada@example.com"}).id,
            "line_items": [{"price": licensed, "quantity": 1}, {"price": calls}],
            "success_url": "https://x.test/ok",
        }
    )
    # then only the plan is due now, and the page says what usage costs
    assert session.amount_total == 2000
    lines = client.v1.checkout.sessions.line_items.list(session.id).data
    assert [(line.price.id, line.get("quantity"), line.amount_total) for line in lines] == [
        (licensed, 1, 2000),
        (calls, None, 0),
    ]
    page = requests.get(session.url, timeout=5).text
    assert "€20.00/month, plus €0.02 per call (API calls)" in page
    # when the buyer pays
    done = requests.post(f"{session.url}/complete", json={"card": "4242424242424242"}, timeout=5)
    assert done.status_code == 200, done.text
    # then the subscription has the licensed item and the metered one, without a quantity
    subscription = client.v1.subscriptions.retrieve(done.json()["subscription"])
    assert subscription.status == "active"
    assert _items(subscription) == [(licensed, "licensed", 1), (calls, "metered", None)]
    # and so does the event announcing it (sent after the items were added)
    (created,) = client.v1.events.list({"type": "customer.subscription.created"}).data
    assert [item["price"]["id"] for item in created.data.object["items"]["data"]] == [licensed, calls]


def test_a_quantity_on_a_metered_line_item_is_refused_as_stripe_does(client: stripe.StripeClient) -> None:
    licensed, calls, _ = _prices(client)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(
            {
                "mode": "subscription",
                "line_items": [{"price": licensed, "quantity": 1}, {"price": calls, "quantity": 1}],
                "success_url": "https://x.test/ok",
            }
        )
    assert caught.value.http_status == 400
    assert caught.value.param == "line_items[1][quantity]"


def test_prices_of_other_intervals_cannot_share_a_checkout(client: stripe.StripeClient) -> None:
    licensed, _, _ = _prices(client)
    product = client.v1.products.create({"name": "Yearly"}).id
    yearly = client.v1.prices.create(
        {
            "product": product,
            "currency": "eur",
            "unit_amount": 1,
            "recurring": {"interval": "year", "usage_type": "metered", "meter": _meter(client, "yearly")},
        }
    ).id
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(
            {
                "mode": "subscription",
                "line_items": [{"price": licensed, "quantity": 1}, {"price": yearly}],
                "success_url": "https://x.test/ok",
            }
        )
    assert caught.value.http_status == 400


def test_the_renewal_invoice_bills_the_meters_usage_of_the_period_that_ended(
    client: stripe.StripeClient, standin: StandinServer
) -> None:
    # given a subscription to the plan and both metered prices, and usage by its customer
    licensed, calls, exports = _prices(client)
    customer = _customer(client)
    subscription = client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": licensed}, {"price": calls}, {"price": exports}]}
    )
    first = (subscription["current_period_start"], subscription["current_period_end"])
    _usage(client, "api_calls", customer, 700)
    _usage(client, "api_calls", customer, 50)
    _usage(client, "exports", customer, 3)
    _usage(client, "api_calls", _customer(client), 999)  # someone else's
    # when the period ends
    answer = requests.post(f"{standin.url}/_dev/clock/advance", json={"days": 32}, timeout=5)
    (invoice_id,) = answer.json()["invoices"]
    # then the invoice bills the next period's plan and the past period's usage, at its unit price
    invoice = client.v1.invoices.retrieve(invoice_id)
    assert (invoice.status, invoice.amount_paid) == ("paid", 2000 + 750 * 2 + 3 * 5)
    assert [(line.amount, line.quantity, line.period.start) for line in invoice.lines.data] == [
        (2000, 1, first[1]),
        (1500, 750, first[0]),
        (15, 3, first[0]),
    ]
    # and the subscription's first invoice billed no usage
    initial = client.v1.invoices.retrieve(subscription.latest_invoice)
    assert initial.amount_paid == 2000


def test_an_update_swaps_the_plan_price_and_replaces_metered_items(client: stripe.StripeClient) -> None:
    # given a subscription with the plan and the API calls price
    licensed, calls, exports = _prices(client)
    product = client.v1.products.create({"name": "Team"}).id
    team = client.v1.prices.create(
        {"product": product, "currency": "eur", "unit_amount": 5000, "recurring": {"interval": "month"}}
    ).id
    subscription = client.v1.subscriptions.create(
        {"customer": _customer(client), "items": [{"price": licensed}, {"price": calls}]}
    )
    plan_item, calls_item = (item.id for item in subscription["items"].data)
    # when the plan changes: its price swapped, API calls dropped, exports added
    updated = client.v1.subscriptions.update(
        subscription.id,
        {
            "items": [
                {"id": plan_item, "price": team},
                {"id": calls_item, "deleted": True},
                {"price": exports},
            ],
            "proration_behavior": "create_prorations",
        },
    )
    # then
    assert _items(updated) == [(team, "licensed", 1), (exports, "metered", None)]
    assert _items(client.v1.subscriptions.retrieve(subscription.id)) == _items(updated)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"price": "LICENSED"}, "items[0][price]"),  # a second licensed price
        ({"id": "PLAN", "deleted": True}, "items[0][deleted]"),  # the plan's own item
        ({"price": "CALLS", "quantity": 2}, "items[0][quantity]"),
    ],
)
def test_item_changes_the_stand_in_cannot_make_are_refused_with_400(
    client: stripe.StripeClient, change: dict, param: str
) -> None:
    licensed, calls, _ = _prices(client)
    subscription = client.v1.subscriptions.create(
        {"customer": _customer(client), "items": [{"price": licensed}]}
    )
    names = {"LICENSED": licensed, "CALLS": calls, "PLAN": subscription["items"].data[0].id}
    spec = {
        key: names.get(value, value) if isinstance(value, str) else value for key, value in change.items()
    }
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.update(subscription.id, {"items": [spec]})
    assert caught.value.http_status == 400
    assert caught.value.param == param
