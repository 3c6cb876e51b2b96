"""Billing Meters in the stand-in, driven through the official SDK over HTTP (no mocks, no database)."""

from __future__ import annotations

import time

import pytest
import stripe

from devtools.testing import StandinServer

API_KEY = "sk_test_" + "m" * 24
HOUR = 3600


@pytest.fixture
def client(standin: StandinServer) -> stripe.StripeClient:
    standin.reset()
    return stripe.StripeClient(API_KEY, base_addresses={"api": standin.url}, max_network_retries=0)


def _meter(client: stripe.StripeClient, event_name: str = "api_calls") -> stripe.billing.Meter:
    return client.v1.billing.meters.create(
        {
            "display_name": "API calls",
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        }
    )


def _event(
    client: stripe.StripeClient, customer: str, value: int, timestamp: int, identifier: str | None = None
) -> stripe.billing.MeterEvent:
    params: dict = {
        "event_name": "api_calls",
        "payload": {"stripe_customer_id": customer, "value": str(value)},
        "timestamp": timestamp,
    }
    if identifier is not None:
        params["identifier"] = identifier
    return client.v1.billing.meter_events.create(params)


def _hour_start() -> int:
    now = int(time.time())
    return now - now % HOUR


def test_meter_is_created_listed_and_retrieved_like_stripe(client: stripe.StripeClient) -> None:
    # when
    meter = _meter(client)
    # then
    assert meter.object == "billing.meter"
    assert meter.id.startswith("mtr_")
    assert meter.event_name == "api_calls"
    assert meter.status == "active"
    assert meter.default_aggregation.formula == "sum"
    assert meter.customer_mapping.event_payload_key == "stripe_customer_id"
    assert meter.value_settings.event_payload_key == "value"
    assert client.v1.billing.meters.retrieve(meter.id).id == meter.id
    assert [m.id for m in client.v1.billing.meters.list({"status": "active"}).data] == [meter.id]


def test_a_second_active_meter_with_the_same_event_name_is_refused(client: stripe.StripeClient) -> None:
    # given
    _meter(client)
    # when / then
    with pytest.raises(stripe.InvalidRequestError) as caught:
        _meter(client)
    assert caught.value.http_status == 400
    assert caught.value.code == "resource_already_exists"


def test_meter_needs_a_known_aggregation_formula(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meters.create(
            {"display_name": "x", "event_name": "x", "default_aggregation": {"formula": "max"}}
        )
    assert caught.value.param == "default_aggregation[formula]"


def test_unknown_meter_is_a_stripe_404(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meters.retrieve("mtr_missing")
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"


def test_meter_event_answers_stripes_shape(client: stripe.StripeClient) -> None:
    # given
    _meter(client)
    customer = client.v1.customers.create({"email": "ada@example.com"})
    at = int(time.time()) - 60
    # when
    event = _event(client, customer.id, 25, at, identifier="report-1")
    # then
    assert event.object == "billing.meter_event"
    assert event.event_name == "api_calls"
    assert event.identifier == "report-1"
    assert event.timestamp == at
    assert event.payload.to_dict() == {"stripe_customer_id": customer.id, "value": "25"}


def test_meter_event_without_identifier_gets_a_generated_one(client: stripe.StripeClient) -> None:
    _meter(client)
    customer = client.v1.customers.create({})
    first = _event(client, customer.id, 1, int(time.time()))
    second = _event(client, customer.id, 1, int(time.time()))
    assert first.identifier != second.identifier
    assert len(first.identifier) == 36


def test_a_repeated_identifier_is_refused_as_stripe_does_and_counted_once(
    client: stripe.StripeClient,
) -> None:
    # given
    meter = _meter(client)
    customer = client.v1.customers.create({})
    start = _hour_start() - HOUR
    _event(client, customer.id, 7, start + 10, identifier="same")
    # when
    with pytest.raises(stripe.InvalidRequestError) as caught:
        _event(client, customer.id, 7, start + 10, identifier="same")
    # then
    assert caught.value.http_status == 400
    assert caught.value.user_message == "An event already exists with identifier same."
    assert caught.value.param == "identifier"
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id, {"customer": customer.id, "start_time": start, "end_time": start + HOUR}
    )
    assert [s.aggregated_value for s in summaries.data] == [7]


@pytest.mark.parametrize(
    "offset", [-(35 * 86400) - 60, 5 * 60 + 60], ids=["more_than_35_days_ago", "more_than_5_minutes_ahead"]
)
def test_timestamps_outside_stripes_bounds_are_refused(client: stripe.StripeClient, offset: int) -> None:
    _meter(client)
    customer = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        _event(client, customer.id, 1, int(time.time()) + offset)
    assert caught.value.param == "timestamp"


def test_timestamps_inside_the_bounds_are_accepted(client: stripe.StripeClient) -> None:
    _meter(client)
    customer = client.v1.customers.create({})
    now = int(time.time())
    assert _event(client, customer.id, 1, now - 34 * 86400).timestamp == now - 34 * 86400
    assert _event(client, customer.id, 1, now + 4 * 60).timestamp == now + 4 * 60


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"event_name": "nope", "payload": {"value": "1"}}, "event_name"),
        ({"event_name": "api_calls", "payload": {"stripe_customer_id": "cus_x", "value": "1"}}, "id"),
        ({"event_name": "api_calls", "payload": {"stripe_customer_id": "CUS", "value": "many"}}, None),
        ({"event_name": "api_calls", "payload": {}}, "payload"),
        ({"event_name": "api_calls", "payload": {"value": "1"}, "identifier": "i" * 101}, "identifier"),
    ],
    ids=["unknown_event_name", "unknown_customer", "value_not_a_number", "no_payload", "identifier_too_long"],
)
def test_bad_meter_events_are_refused(client: stripe.StripeClient, params: dict, param: str | None) -> None:
    _meter(client)
    customer = client.v1.customers.create({})
    payload = params["payload"]
    if payload.get("stripe_customer_id") == "CUS":
        payload["stripe_customer_id"] = customer.id
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meter_events.create(params)
    assert caught.value.http_status in (400, 404)
    if param is not None:
        assert caught.value.param == param


def test_event_summaries_sum_per_customer_and_window(client: stripe.StripeClient) -> None:
    # given two customers' events over two hours, and one outside the range
    meter = _meter(client)
    ada = client.v1.customers.create({}).id
    bob = client.v1.customers.create({}).id
    start = _hour_start() - 3 * HOUR
    _event(client, ada, 5, start)
    _event(client, ada, 7, start + HOUR - 1)
    _event(client, ada, 11, start + HOUR)
    _event(client, ada, 100, start + 2 * HOUR)  # end_time is exclusive
    _event(client, bob, 3, start + 30)
    end = start + 2 * HOUR
    summaries = client.v1.billing.meters.event_summaries
    # when
    total = summaries.list(meter.id, {"customer": ada, "start_time": start, "end_time": end})
    hourly = summaries.list(
        meter.id, {"customer": ada, "start_time": start, "end_time": end, "value_grouping_window": "hour"}
    )
    # then
    assert [(s.start_time, s.end_time, s.aggregated_value) for s in total.data] == [
        (start, start + 2 * HOUR, 23)
    ]
    assert total.data[0].object == "billing.meter_event_summary"
    assert total.data[0].meter == meter.id
    assert [(s.start_time, s.aggregated_value) for s in hourly.data] == [(start, 12), (start + HOUR, 11)]
    bob_total = summaries.list(meter.id, {"customer": bob, "start_time": start, "end_time": end})
    assert [s.aggregated_value for s in bob_total.data] == [3]


def test_event_summaries_need_minute_aligned_times(client: stripe.StripeClient) -> None:
    meter = _meter(client)
    customer = client.v1.customers.create({}).id
    start = _hour_start()
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meters.event_summaries.list(
            meter.id, {"customer": customer, "start_time": start + 1, "end_time": start + HOUR}
        )
    assert caught.value.param == "start_time"


def test_metered_price_names_its_meter(client: stripe.StripeClient) -> None:
    # given
    meter = _meter(client)
    product = client.v1.products.create({"name": "API"})
    # when
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "eur",
            "unit_amount": 2,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    # then
    assert price.recurring.usage_type == "metered"
    assert price.recurring.meter == meter.id
    assert client.v1.prices.retrieve(price.id).recurring.meter == meter.id


def test_metered_price_without_a_meter_is_refused(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "API"})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {
                "product": product.id,
                "currency": "eur",
                "unit_amount": 2,
                "recurring": {"interval": "month", "usage_type": "metered"},
            }
        )
    assert caught.value.param == "recurring[meter]"


def test_licensed_price_says_so(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "Plan"})
    price = client.v1.prices.create(
        {"product": product.id, "currency": "eur", "unit_amount": 900, "recurring": {"interval": "month"}}
    )
    assert price.recurring.usage_type == "licensed"
    assert price.recurring.meter is None
