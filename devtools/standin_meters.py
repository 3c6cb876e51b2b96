"""Billing Meters for the dev Stripe stand-in: meters, meter events and their summaries, and
metered prices (`recurring.usage_type=metered` with `recurring.meter`).

Hooked into devtools/stripe_standin.py by `install()`; never import it from production code.

As Stripe does (https://docs.stripe.com/api/billing/meter-event/create):
- a meter event names a meter by `event_name` and carries the customer and the value in its
  `payload` under the meter's `customer_mapping.event_payload_key` / `value_settings.event_payload_key`
  (`stripe_customer_id` and `value` unless the meter says otherwise), values as strings;
- its `identifier` is unique: a second event with the same one is refused with 400
  "An event already exists with identifier ..." (Stripe keeps identifiers at least 24 hours; the
  stand-in keeps them as long as the event);
- its `timestamp` is at most 35 days in the past and 5 minutes in the future;
- event summaries (`GET /v1/billing/meters/{id}/event_summaries`) take a customer and a
  minute-aligned [start_time, end_time), optionally grouped by `hour` or `day`.

A subscription item of a metered price is billed at renewal (devtools/standin_clock.py): the
meter's aggregated value for the subscription's customer over the period that ended, times the
price's unit amount; the first invoice bills no usage.

Where it differs (known, accepted): Stripe validates an event's meter and customer asynchronously
(an error report webhook); the stand-in refuses an unknown event name or customer at once, with a
400, and its summaries count an event as soon as it is accepted (Stripe's are eventually consistent).
No meter event adjustments, no `v2` meter event streams, no deactivation.
"""

from __future__ import annotations

import itertools
import time
import uuid
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from aiohttp import web
from localstripe import resources as ls
from localstripe import server
from localstripe.errors import UserError

MAX_PAST_SECONDS = 35 * 86400
MAX_FUTURE_SECONDS = 5 * 60
MAX_NAME_LENGTH = 100  # event_name and identifier
FORMULAS = ("sum", "count", "last")
GROUPING_SECONDS = {"hour": 3600, "day": 86400}
_MISSING = object()
# devtools.stripe_standin (or `__main__` when run with -m): given by install(), never imported
# here, so that `python -m devtools.stripe_standin` does not load and patch a second copy.
_standin: Any = None


def _bad(message: str, param: str | None = None, code: str | None = None) -> UserError:
    contents: dict[str, Any] = {}
    if param:
        contents["param"] = param
    if code:
        contents["code"] = code
    return UserError(400, message, contents)


def _text(data: dict, name: str, *, required: bool = True, max_length: int = 5000) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _bad(f"Missing required param: {name}.", name, "parameter_missing")
    if len(value) > max_length or "\x00" in value:
        raise _bad(f"Invalid {name}: must be at most {max_length} characters.", name)
    return value


def _integer(value: Any, name: str) -> int:
    number = ls.try_convert_to_int(value)
    if not isinstance(number, int) or isinstance(number, bool):
        raise _bad(f"Invalid integer: {value}", name)
    return number


def _meters() -> list[dict]:
    return [value for key, value in ls.store.items() if key.startswith("billing.meter:")]


def _meter(meter_id: str) -> dict:
    meter = ls.store.get(f"billing.meter:{meter_id}")
    if meter is None:
        raise _standin._no_such("billing.meter", meter_id)
    return meter


def _active_meter_named(event_name: str) -> dict | None:
    for meter in _meters():
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    return None


# --- meters ------------------------------------------------------------------------------------------


def meter_create(data: dict) -> dict:
    display_name = _text(data, "display_name", max_length=250)
    event_name = _text(data, "event_name", max_length=MAX_NAME_LENGTH)
    aggregation = data.get("default_aggregation")
    formula = aggregation.get("formula") if isinstance(aggregation, dict) else None
    if formula not in FORMULAS:
        raise _bad(
            "Invalid default_aggregation[formula]: must be one of sum, count, last.",
            "default_aggregation[formula]",
        )
    mapping = data.get("customer_mapping") or {}
    value_settings = data.get("value_settings") or {}
    window = data.get("event_time_window")
    if not isinstance(mapping, dict) or mapping.get("type", "by_id") != "by_id":
        raise _bad("Invalid customer_mapping[type]: must be by_id.", "customer_mapping[type]")
    if not isinstance(value_settings, dict):
        raise _bad("Invalid value_settings.", "value_settings")
    if window is not None and window not in GROUPING_SECONDS:
        raise _bad("Invalid event_time_window: must be one of day, hour.", "event_time_window")
    unknown = set(data) - {
        "display_name",
        "event_name",
        "default_aggregation",
        "customer_mapping",
        "value_settings",
        "event_time_window",
    }
    _standin._refuse_unknown(dict.fromkeys(unknown))
    if _active_meter_named(str(event_name)) is not None:
        raise _bad(
            f"A meter with event_name `{event_name}` already exists.", "event_name", "resource_already_exists"
        )
    now = int(time.time())
    meter = {
        "id": "mtr_test_" + ls.random_id(24),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": {
            "event_payload_key": str(mapping.get("event_payload_key") or "stripe_customer_id"),
            "type": "by_id",
        },
        "default_aggregation": {"formula": formula},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": window,
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": now,
        "value_settings": {"event_payload_key": str(value_settings.get("event_payload_key") or "value")},
    }
    ls.store[f"billing.meter:{meter['id']}"] = meter
    return meter


def _page(url: str, items: list[dict], query: dict) -> dict:
    limit = _integer(query.pop("limit", 10), "limit")
    if not 1 <= limit <= 100:
        raise _bad("Invalid limit: must be between 1 and 100.", "limit")
    after = query.pop("starting_after", None)
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise _standin._no_such("object", str(after))
        start = ids.index(after) + 1
    _standin._refuse_unknown(query)
    return {
        "object": "list",
        "data": items[start : start + limit],
        "has_more": len(items) > start + limit,
        "url": url,
    }


# --- meter events ------------------------------------------------------------------------------------


def _number(value: Any, name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or isinstance(value, bool):
        raise _bad(f"Invalid payload[{name}]: must be a number.", f"payload[{name}]")
    return number


def meter_event_create(data: dict) -> dict:
    event_name = _text(data, "event_name", max_length=MAX_NAME_LENGTH)
    payload = data.get("payload")
    if not isinstance(payload, dict) or not payload:
        raise _bad("Missing required param: payload.", "payload", "parameter_missing")
    identifier = _text(data, "identifier", required=False, max_length=MAX_NAME_LENGTH)
    now = int(time.time())
    raw_timestamp = data.get("timestamp", _MISSING)
    timestamp = now if raw_timestamp is _MISSING else _integer(raw_timestamp, "timestamp")
    _standin._refuse_unknown(dict.fromkeys(set(data) - {"event_name", "payload", "identifier", "timestamp"}))
    if timestamp < now - MAX_PAST_SECONDS or timestamp > now + MAX_FUTURE_SECONDS:
        raise _bad(
            "Timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
            "timestamp",
            "timestamp_out_of_range",
        )
    meter = _active_meter_named(str(event_name))
    if meter is None:
        raise _bad(f"No active meter was found for event_name `{event_name}`.", "event_name")
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    customer = payload.get(customer_key)
    if not isinstance(customer, str) or ls.store.get(f"customer:{customer}") is None:
        raise _standin._no_such("customer", str(customer))
    counts = meter["default_aggregation"]["formula"] == "count"
    value = _number(payload.get(value_key, "1" if counts else None), value_key)
    identifier = identifier or str(uuid.uuid4())
    key = f"billing.meter_event:{identifier}"
    if key in ls.store:
        # What Stripe answers for a repeated identifier (a plain 400, not retryable).
        raise _bad(f"An event already exists with identifier {identifier}.", "identifier")
    event = {
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": {str(k): str(v) for k, v in payload.items()},
        "timestamp": timestamp,
        # Kept for summaries, not exported.
        "_meter": meter["id"],
        "_customer": customer,
        "_value": value,
    }
    ls.store[key] = event
    return _public(event)


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _events_of(meter: dict, customer: str, start: int, end: int) -> list[dict]:
    return sorted(
        (
            value
            for key, value in ls.store.items()
            if key.startswith("billing.meter_event:")
            and value["_meter"] == meter["id"]
            and value["_customer"] == customer
            and start <= value["timestamp"] < end
        ),
        key=lambda event: (event["timestamp"], event["created"]),
    )


def _aggregate(formula: str, events: list[dict]) -> int | float:
    if formula == "count":
        return len(events)
    if formula == "last":
        total = events[-1]["_value"] if events else Decimal(0)
    else:
        total = sum((event["_value"] for event in events), Decimal(0))
    return int(total) if total == total.to_integral_value() else float(total)


def meter_event_summaries(meter_id: str, query: dict, url: str) -> dict:
    meter = _meter(meter_id)
    customer = _text(query, "customer")
    start = _integer(query.pop("start_time", None), "start_time")
    end = _integer(query.pop("end_time", None), "end_time")
    grouping = query.pop("value_grouping_window", None)
    query.pop("customer", None)
    for name, value in (("start_time", start), ("end_time", end)):
        if value % 60:
            raise _bad(f"Invalid {name}: must be aligned with minute boundaries.", name)
    if start >= end:
        raise _bad("start_time must be before end_time.", "start_time")
    if grouping is not None and grouping not in GROUPING_SECONDS:
        raise _bad("Invalid value_grouping_window: must be one of day, hour.", "value_grouping_window")
    if grouping is None:
        bounds = [(start, end)]
    else:
        step = GROUPING_SECONDS[grouping]
        cuts = [start, *range(start - start % step + step, end, step), end]
        bounds = list(itertools.pairwise(cuts))
    formula = meter["default_aggregation"]["formula"]
    summaries = [
        {
            "id": f"mtrusg_test_{meter['id'][-12:]}{customer}{low}{high}",
            "object": "billing.meter_event_summary",
            "aggregated_value": _aggregate(formula, _events_of(meter, str(customer), low, high)),
            "end_time": high,
            "livemode": False,
            "meter": meter["id"],
            "start_time": low,
        }
        for low, high in bounds
    ]
    return _page(url, summaries, query)


# --- metered prices ----------------------------------------------------------------------------------

_plain_recurring: Any = None


def _recurring_with_meter(recurring: dict | None) -> dict | None:
    """Price `recurring` with Stripe's `usage_type` (licensed or metered) and, for metered, `meter`."""
    result = _plain_recurring(recurring)
    if result is None or not isinstance(recurring, dict):
        return result
    usage_type = recurring.get("usage_type", "licensed")
    meter_id = recurring.get("meter")
    if usage_type not in ("licensed", "metered"):
        raise _bad(
            "Invalid recurring[usage_type]: must be one of licensed, metered.", "recurring[usage_type]"
        )
    if usage_type == "metered":
        if not isinstance(meter_id, str) or not meter_id:
            raise _bad("A metered price requires a meter: recurring[meter].", "recurring[meter]")
        if _meter(meter_id)["status"] != "active":
            raise _bad(f"The meter `{meter_id}` is not active.", "recurring[meter]")
    elif meter_id is not None:
        raise _bad("recurring[meter] is only for metered prices.", "recurring[meter]")
    result["usage_type"] = usage_type
    result["meter"] = meter_id if usage_type == "metered" else None
    return result


# --- billing metered items ---------------------------------------------------------------------------
# A subscription item of a metered price is billed in arrears: the renewal invoice of
# devtools/standin_clock.py sets `_billing_window` to the period that just ended, and the item's
# line then bills its meter's usage by the subscription's customer over that window (the meter's
# own aggregation), at the price's unit amount. Any other invoice bills it nothing.
_plain_calculate_amount: Any = None
_plain_line_init: Any = None


def metered_usage(item: Any) -> Decimal | None:
    """What a metered item's line bills (None for a licensed item)."""
    price = ls.store.get("price:" + item.plan.id)
    recurring = getattr(price, "recurring", None) or {}
    if recurring.get("usage_type") != "metered":
        return None
    window = getattr(item, "_billing_window", None)
    meter = ls.store.get(f"billing.meter:{recurring.get('meter')}")
    if window is None or meter is None or not item._subscription:
        return Decimal(0)
    customer = ls.Subscription._api_retrieve(item._subscription).customer
    value = _aggregate(meter["default_aggregation"]["formula"], _events_of(meter, customer, *window))
    return Decimal(str(value))


def _calculate_amount_with_usage(self: Any) -> int:
    usage = metered_usage(self)
    if usage is None:
        return int(_plain_calculate_amount(self))
    return int((usage * self.plan.amount).to_integral_value(rounding=ROUND_HALF_UP))


def _line_init_with_usage(self: Any, item: Any) -> None:
    _plain_line_init(self, item)
    usage = metered_usage(item) if isinstance(item, ls.SubscriptionItem) else None
    if usage is not None:
        self.quantity = int(usage) if usage == usage.to_integral_value() else float(usage)
        window = getattr(item, "_billing_window", None)
        if window is not None:  # the usage billed is the past period's
            self.period = {"start": window[0], "end": window[1]}


# --- routes ------------------------------------------------------------------------------------------


async def _post_meter(request: web.Request) -> web.Response:
    return server.json_response(meter_create(await server.get_post_data(request) or {}))


async def _get_meter(request: web.Request) -> web.Response:
    return server.json_response(_meter(request.match_info["id"]))


async def _list_meters(request: web.Request) -> web.Response:
    query = server.unflatten_data(request.query)
    status = query.pop("status", None)
    meters = sorted(_meters(), key=lambda meter: (-meter["created"], meter["id"]))
    meters = [meter for meter in meters if status is None or meter["status"] == status]
    return server.json_response(_page("/v1/billing/meters", meters, query))


async def _post_meter_event(request: web.Request) -> web.Response:
    return server.json_response(meter_event_create(await server.get_post_data(request) or {}))


async def _list_event_summaries(request: web.Request) -> web.Response:
    meter_id = request.match_info["id"]
    query = server.unflatten_data(request.query)
    url = f"/v1/billing/meters/{meter_id}/event_summaries"
    return server.json_response(meter_event_summaries(meter_id, query, url))


def install(router: web.UrlDispatcher, standin: Any) -> None:
    """Add the routes and make prices take a meter; `standin` is the stripe_standin module
    (called from its _install)."""
    global _standin, _plain_recurring, _plain_calculate_amount, _plain_line_init
    _standin, _plain_recurring = standin, standin._recurring
    standin._recurring = _recurring_with_meter
    _plain_calculate_amount = ls.SubscriptionItem._calculate_amount
    ls.SubscriptionItem._calculate_amount = _calculate_amount_with_usage
    _plain_line_init = ls.InvoiceLineItem.__init__
    ls.InvoiceLineItem.__init__ = _line_init_with_usage
    router.add_post("/v1/billing/meters", _post_meter)
    router.add_get("/v1/billing/meters", _list_meters)
    router.add_get("/v1/billing/meters/{id}", _get_meter)
    router.add_get("/v1/billing/meters/{id}/event_summaries", _list_event_summaries)
    router.add_post("/v1/billing/meter_events", _post_meter_event)
