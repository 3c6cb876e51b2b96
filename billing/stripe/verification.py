"""Whether a webhook delivery is Stripe's: the one check both intake paths use (the fast path of
billing.stripe.middleware and the view of billing.stripe.views)."""

from __future__ import annotations

import re
import time
from typing import Any

import stripe
from django.views.decorators.debug import sensitive_variables

from payments_project.api import STRIPE_ID_MAX_LENGTH, is_printable
from payments_project.security import UNPARSED, json_loads, nul_path, orjson_loads_bounded

# Stripe's default tolerance (stripe.Webhook.DEFAULT_TOLERANCE), in seconds.
DEFAULT_TOLERANCE = 300


@sensitive_variables("signature", "secret")
def webhook_event_verified(
    body: str, signature: str, *, secret: str, tolerance: int
) -> dict[str, Any] | None:
    """The event a delivery carries when it is Stripe's and well formed, else None.

    Stripe's scheme, as dj-stripe's `verify_signature` method: HMAC-SHA256 of "{t}.{body}" with
    the endpoint's secret (any of several v1= signatures may match, as while Stripe rolls a
    secret), t within the endpoint's tolerance. Timestamps more than the tolerance away are
    refused on both sides (Stripe's own check only refuses old ones). Done here rather than by
    WebhookEventTrigger.validate, which crashes (500) on a JSON body that is not an object and,
    with DEBUG on, lets an `X-Djstripe-Webhook-Secret` header replace the secret: anyone reaching
    a development server could then forge events.
    """
    if tolerance <= 0:
        # Stripe's check skips the age test for a tolerance of 0 (dj-stripe allows one): any
        # captured delivery would then replay forever. Stripe's own default applies instead.
        tolerance = DEFAULT_TOLERANCE
    try:
        stripe.WebhookSignature.verify_header(body, signature, secret, tolerance)
    except stripe.SignatureVerificationError:
        return None
    if _signed_at(signature) > time.time() + tolerance:
        # Stripe's check refuses only old timestamps; one from the future is refused alike (a
        # replay signed ahead of time would otherwise stay valid until that time plus tolerance).
        return None
    event = orjson_loads_bounded(body.encode())  # what json_loads reads, faster
    if event is UNPARSED:
        try:
            event = json_loads(body)
        except ValueError:
            return None
    if (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and len(event["id"]) <= STRIPE_ID_MAX_LENGTH
        and "livemode" in event
        and _envelope_ok(event)
        and (_SUSPECT_NUMBER.search(body) is None or _timestamps_in_range(event))
        # PostgreSQL's jsonb holds no NUL; parsed JSON has one only from a \u0000 escape (a raw
        # control character in a string is not JSON).
        and ("\\u0000" not in body or nul_path(event) is None)
    ):
        return event
    return None


# The inbox's column (billing.stripe.models.StripeEvent.type); Stripe's longest type is under 60.
_EVENT_TYPE_MAX = 128
_API_VERSION_MAX = 64  # dj-stripe's Event.api_version


def _envelope_ok(event: dict[str, Any]) -> bool:
    """The fields every Stripe event has, of the types the processing reads: an integer `created`,
    a `type` that fits the inbox, `data.object` an object, `api_version` text or null. A signed
    event without them is broken (or signed with a leaked secret): refused at intake as
    invalid_webhook, where it would otherwise be accepted and fail in the worker."""
    data = event.get("data")
    api_version = event.get("api_version")
    event_type = event.get("type")
    return (
        type(event.get("created")) is int
        and type(event_type) is str
        and 0 < len(event_type) <= _EVENT_TYPE_MAX
        and is_printable(event_type)
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
        and (api_version is None or (type(api_version) is str and len(api_version) <= _API_VERSION_MAX))
    )


# Every Unix time Stripe sends is a real date: one past 2200 (or before 1970) is forged or broken,
# and would overflow Python's datetime (year 9999) somewhere in the processing.
_LATEST_TIMESTAMP = 7_258_118_400  # 2200-01-01
_TIMESTAMP_KEYS = frozenset(
    {
        "created",
        "date",
        "start_date",
        "trial_start",
        "trial_end",
        "current_period_start",
        "current_period_end",
        "cancel_at",
        "billing_cycle_anchor",
        "period_start",
        "period_end",
        "due_date",
        "next_payment_attempt",
        "available_on",
        "arrival_date",
        "start",
        "end",
    }
)


# A JSON number that may be out of _timestamps_in_range's bounds: negative, of 11 digits or more, or
# of 10 digits from 7,000,000,000 (2191). Every Stripe timestamp until then has neither, so the
# event is walked only when its body has one (a string holding such text only costs the walk).
_SUSPECT_NUMBER = re.compile(r"[:\[,]\s*(?:-|\d{11}|[7-9]\d{9})")


def _timestamps_in_range(value: object, key: str = "") -> bool:
    """Every integer under a key Stripe uses for a Unix time lies between 1970 and 2200."""
    if isinstance(value, dict):
        return all(_timestamps_in_range(item, str(name)) for name, item in value.items())
    if isinstance(value, list):
        return all(_timestamps_in_range(item, key) for item in value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (key in _TIMESTAMP_KEYS or key.endswith("_at"))
    ):
        return 0 <= value <= _LATEST_TIMESTAMP
    return True


def _signed_at(signature: str) -> int:
    """The `t=` timestamp of a Stripe-Signature header, read as Stripe's verify_header reads it
    (the first item whose key is exactly `t`), so both judge the same value; verify_header has
    already parsed it."""
    for item in signature.split(","):
        parts = item.split("=", 2)
        if parts[0] == "t":
            try:
                return int(parts[1])
            except (IndexError, ValueError):
                return 0
    return 0
