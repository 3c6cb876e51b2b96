"""Renewals for the Stripe stand-in: a clock that can be moved forward, invoices that fail later.

Dev and test only, installed by `devtools.stripe_standin._install()` (`install(app)`).

- `POST /_dev/clock/advance` with `{"days": 3}` (or `"seconds"`): moves the stand-in's clock
  forward, like advancing a Stripe test clock. Every live subscription whose period ended by the
  new time is renewed: its period moves on, a `subscription_cycle` invoice is issued and its payment
  attempted with the customer's default card, and the outcome is sent as signed webhooks
  (`invoice.created`, `invoice.finalized`, then `invoice.payment_succeeded` + `invoice.paid`, or
  `invoice.payment_failed`; `customer.subscription.updated` when the status moves to/from
  `past_due`). A subscription set to cancel at its period end is cancelled instead
  (`customer.subscription.deleted`). `GET /_dev/clock` says what time the stand-in thinks it is.
  Objects are dated by the stand-in's clock; events by the real time (they are sent now, and our
  webhook endpoint refuses signatures from the future, as Stripe's libraries do).
- `POST /_dev/payment_methods/{id}/decline_later` with `{"decline_code": "stolen_card",
  "advice_code": "do_not_try_again", "network_advice_code": "03"}`: that card attached fine, and
  every later charge fails with those codes (Stripe has no such test card: its lost/stolen cards
  fail at attach). `pm_card_chargeCustomerFail` / 4000 0000 0000 0341 fails later charges with
  `generic_decline`, as in Stripe.
- 4000 0000 0000 0341 is accepted on the checkout page (a plan with a trial then starts; without
  one the first charge fails, as at Stripe). Attaching a card to a customer sends
  `payment_method.attached` (how a new card restarts dunning).
- `POST /v1/invoices/{id}/pay` (optional `payment_method`, `off_session`), `/void` and
  `/mark_uncollectible` as Stripe answers them: a failed payment is a 402 card error carrying
  `decline_code`, `advice_code` and `network_advice_code`, and sends `invoice.payment_failed`; the
  invoice stays open (its `attempt_count` grows; `next_payment_attempt` is null: Stripe's automatic
  retries are off, we own the schedule). `invoice.voided` and `invoice.marked_uncollectible` are
  sent too.
- As at Stripe, a failed invoice payment leaves its codes on the invoice's PaymentIntent
  (`invoice.payment_intent`, or `payments` when expanded as API versions from 2025-03-31 have it):
  `last_payment_error` carries `code`, `decline_code`, `advice_code` and `network_advice_code`.

Every request to `/v1/invoices/...` is also logged, before the idempotency replay, so tests can
assert at the HTTP layer how often Stripe was asked (`requests_log()`).

`POST /_dev/faults` with `{"path": "/v1/invoices/in_.../void", "status": 500, "times": 2}`: the
next `times` requests to that exact path are answered with that status and Stripe's `api_error`
body (after being logged, before anything runs, so nothing is done nor kept for their idempotency
key), as when Stripe has an outage; other paths answer as usual. `DELETE /_dev/faults` forgets them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from localstripe import resources as ls
from localstripe import server
from localstripe.errors import UserError
from localstripe.webhooks import schedule_webhook

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OFFSET = "standin_clock:offset"
_DECLINE_LATER = "standin_clock:decline_later"
_REQUESTS = "standin_clock:requests"
_FAULTS = "standin_clock:faults"
# At most this many renewals of one subscription per advance (a year of monthly periods and more).
MAX_RENEWALS_PER_ADVANCE = 400
# Numbers localstripe declines at charge time only, with Stripe's default decline code.
_CARD_DECLINE_CODES = {
    "4000000000009995": "insufficient_funds",
    "4000000000009987": "lost_card",
    "4000000000009979": "stolen_card",
}
_ATTACH = re.compile(r"^/v1/payment_methods/(?P<id>[A-Za-z0-9_]+)/attach$")
_INVOICE_ACTION = re.compile(
    r"^/v1/invoices/(?P<id>in_[A-Za-z0-9]+)/(?P<action>pay|void|mark_uncollectible)$"
)


# --- the clock ----------------------------------------------------------------------------------
def now() -> int:
    """The stand-in's time: the real time plus how far it was advanced (forgotten on reset)."""
    return int(time.time()) + int(ls.store.get(_OFFSET, 0))


def advance(seconds: int) -> list[str]:
    """Move the clock forward and renew what came due; the ids of the invoices issued."""
    if seconds < 0:
        raise UserError(400, "The clock only moves forward.", {"param": "seconds"})
    ls.store[_OFFSET] = int(ls.store.get(_OFFSET, 0)) + seconds
    issued: list[str] = []
    for key in sorted(k for k in list(ls.store.keys()) if str(k).startswith("subscription:")):
        subscription = ls.store.get(key)
        if isinstance(subscription, ls.Subscription):
            issued.extend(_renew_due(subscription))
    ls.store.dump_to_disk()
    return issued


def _renew_due(subscription: Any) -> list[str]:
    issued: list[str] = []
    for _ in range(MAX_RENEWALS_PER_ADVANCE):
        if subscription.status not in ("trialing", "active", "past_due", "unpaid"):
            break
        end = subscription.current_period_end
        if end > now():
            break
        if subscription.cancel_at_period_end:
            _cancel(subscription, at=end)
            break
        issued.append(_renew(subscription, period_start=end))
    return issued


def _cancel(subscription: Any, *, at: int) -> None:
    subscription.status = "canceled"
    subscription.canceled_at = subscription.ended_at = at
    schedule_webhook(ls.Event("customer.subscription.deleted", subscription))


def _renew(subscription: Any, *, period_start: int) -> str:
    """The next period starts: its invoice is issued and its payment attempted once. Metered
    items bill the usage of the period that ended (devtools/standin_meters.py)."""
    ended = (subscription.start_date, period_start)
    subscription.start_date = period_start  # localstripe derives the period from it
    if subscription.status == "trialing":
        subscription.status = "active"
    items = list(subscription.items._list)
    for item in items:
        item._billing_window = ended
    try:
        invoice = ls.Invoice(
            customer=subscription.customer,
            subscription=subscription.id,
            items=items,
            date=period_start,
        )
    finally:
        for item in items:
            item._billing_window = None
    invoice.created = period_start
    invoice.billing_reason = "subscription_cycle"
    invoice._finalize()
    invoice.status_transitions["finalized_at"] = period_start
    schedule_webhook(ls.Event("invoice.finalized", invoice))
    _attempt(invoice, payment_method=None)
    return str(invoice.id)


# --- paying an invoice --------------------------------------------------------------------------
def _decline_later() -> dict[str, dict[str, str]]:
    return ls.store.setdefault(_DECLINE_LATER, {})


def _codes_of(pm: Any) -> dict[str, str | None]:
    configured = _decline_later().get(pm.id)
    if configured:
        return {
            "decline_code": configured.get("decline_code") or "generic_decline",
            "advice_code": configured.get("advice_code"),
            "network_advice_code": configured.get("network_advice_code"),
        }
    number = getattr(pm, "_card_number", "")
    return {
        "decline_code": _CARD_DECLINE_CODES.get(number, "generic_decline"),
        "advice_code": None,
        "network_advice_code": None,
    }


_charging_is_declined = ls.PaymentMethod._charging_is_declined


def _charging_is_declined_later(self: Any) -> bool:
    return bool(_charging_is_declined(self) or self.id in _decline_later())


ls.PaymentMethod._charging_is_declined = _charging_is_declined_later
_invoice_status = ls.Invoice.status


def _status_with_uncollectible(self: Any) -> str:
    status = _invoice_status.fget(self)
    if status == "open" and getattr(self, "_uncollectible", False):
        return "uncollectible"
    return str(status)


ls.Invoice.status = property(_status_with_uncollectible)
# Stripe leaves it null when the invoice will not be retried automatically (retries are ours).
ls.Invoice.next_payment_attempt = property(lambda self: None)


def _invoice_payments(self: Any) -> dict[str, Any]:
    """Stripe's `payments` (API versions from 2025-03-31, sent only when expanded): the invoice's
    PaymentIntent as its default InvoicePayment; `payment_intent` stays for older versions."""
    data: list[dict[str, Any]] = []
    intent_id = getattr(self, "payment_intent", None)
    if isinstance(intent_id, str) and intent_id:
        intent = ls.store.get(f"payment_intent:{intent_id}")
        paid = self.status == "paid"
        data.append(
            {
                "id": "inpay_" + intent_id.removeprefix("pi_"),
                "object": "invoice_payment",
                "amount_paid": self.amount_due if paid else None,
                "amount_requested": self.amount_due,
                "created": getattr(intent, "created", None) or self.created,
                "currency": self.currency,
                "invoice": self.id,
                "is_default": True,
                "livemode": False,
                "payment": {"type": "payment_intent", "payment_intent": intent_id},
                "status": "paid" if paid else "open",
            }
        )
    return {"object": "list", "data": data, "has_more": False, "url": "/v1/invoice_payments"}


ls.Invoice.payments = property(_invoice_payments)
ls.Invoice._includable = (*getattr(ls.Invoice, "_includable", ()), "payments")
_last_payment_error = ls.PaymentIntent.last_payment_error

# Declines that Stripe reports under their own error code rather than card_declined.
_OWN_CODE_DECLINES = {"expired_card", "incorrect_cvc", "incorrect_number", "processing_error"}


def _last_payment_error_with_codes(self: Any) -> dict[str, Any] | None:
    """As Stripe fills it for a declined card: the decline code, the advice codes when the issuer or
    network gave one, the card's type and the payment method (localstripe gives code and message)."""
    error = _last_payment_error.fget(self)
    if not error or "charge" not in error:
        return error  # no error, or 3-D Secure's authentication failure (kept as localstripe says)
    pm = ls.store.get(f"payment_method:{self.payment_method}") if self.payment_method else None
    if pm is None:
        return {**error, "type": "card_error"}
    codes = {k: v for k, v in _codes_of(pm).items() if v}
    decline = codes.get("decline_code", "generic_decline")
    return {
        **error,
        "type": "card_error",
        "code": decline if decline in _OWN_CODE_DECLINES else "card_declined",
        **codes,
        "payment_method": {"id": pm.id, "object": "payment_method", "type": pm.type},
    }


ls.PaymentIntent.last_payment_error = property(_last_payment_error_with_codes)


def _attempt(invoice: Any, *, payment_method: str | None) -> dict[str, Any] | None:
    """Charge the invoice once; None when paid, else Stripe's error body (never raises)."""
    customer = ls.Customer._api_retrieve(invoice.customer)
    pm = (
        ls.PaymentMethod._api_retrieve(payment_method)
        if payment_method
        else customer._get_default_payment_method_or_source()
    )
    invoice._draft = False
    invoice.attempted = True
    invoice.attempt_count = int(getattr(invoice, "_attempts", 0)) + 1
    invoice._attempts = invoice.attempt_count
    if pm is None:
        error: dict[str, Any] = {
            "code": "missing",
            "message": "Cannot charge a customer that has no active card",
            "decline_code": None,
            "advice_code": None,
            "network_advice_code": None,
        }
        return _failed(invoice, error)
    intent = ls.PaymentIntent(
        amount=invoice.total, currency=invoice.currency, customer=invoice.customer, payment_method=pm.id
    )
    intent.invoice = invoice.id
    invoice.payment_intent = intent.id
    intent._confirm(on_failure_now=lambda: None)
    if invoice.status == "paid":
        invoice._uncollectible = False
        invoice.status_transitions["paid_at"] = now()
        schedule_webhook(ls.Event("invoice.payment_succeeded", invoice))
        schedule_webhook(ls.Event("invoice.paid", invoice))
        _subscription_to(invoice, "active")
        return None
    charge = intent.latest_charge
    codes = _codes_of(pm)
    error = {
        "code": codes["decline_code"] if codes["decline_code"] in _OWN_CODE_DECLINES else "card_declined",
        "message": "Your card was declined.",
        "charge": charge.id if charge is not None else None,
        "payment_intent": {"id": intent.id, "status": intent.status},
        "payment_method": {"id": pm.id, "object": "payment_method", "type": pm.type},
        **codes,
    }
    return _failed(invoice, error)


def _failed(invoice: Any, error: dict[str, Any]) -> dict[str, Any]:
    invoice.last_finalization_error = None
    invoice._last_payment_error = error
    schedule_webhook(ls.Event("invoice.payment_failed", invoice))
    _subscription_to(invoice, "past_due")
    return error


def _subscription_to(invoice: Any, status: str) -> None:
    if not invoice.subscription:
        return
    subscription = ls.store.get(f"subscription:{invoice.subscription}")
    if subscription is None or subscription.status in ("canceled", "incomplete_expired", "incomplete"):
        return
    if subscription.latest_invoice != invoice.id and status == "active":
        # An older invoice paid late leaves a newer unpaid one in charge of the status.
        latest = ls.store.get(f"invoice:{subscription.latest_invoice}")
        if latest is not None and latest.status == "open":
            return
    if subscription.status != status:
        subscription.status = status
        schedule_webhook(ls.Event("customer.subscription.updated", subscription))


def invoice_pay(id: str, payment_method: str | None = None, off_session: Any = None, **kwargs: Any) -> Any:
    if kwargs:
        raise UserError(400, "Received unknown parameter: " + ", ".join(kwargs))
    invoice = ls.Invoice._api_retrieve(id)
    if invoice.status == "paid":
        raise UserError(400, "Invoice is already paid", {"code": "invoice_already_paid"})
    if invoice.status not in ("draft", "open", "uncollectible"):
        raise UserError(400, f"You cannot pay an invoice with status {invoice.status}.")
    if payment_method is not None:
        ls.PaymentMethod._api_retrieve(payment_method)  # 404 first
    error = _attempt(invoice, payment_method=payment_method)
    if error is not None:
        message = error.pop("message")
        raise UserError(402, message, error)
    return invoice


def invoice_void(id: str, **kwargs: Any) -> Any:
    if kwargs:
        raise UserError(400, "Received unknown parameter: " + ", ".join(kwargs))
    invoice = ls.Invoice._api_retrieve(id)
    if invoice.status not in ("draft", "open", "uncollectible"):
        raise UserError(400, f"You can only void an open or uncollectible invoice; it is {invoice.status}.")
    intent = ls.store.get(f"payment_intent:{invoice.payment_intent}") if invoice.payment_intent else None
    if intent is not None and intent.status in ("requires_payment_method", "requires_confirmation"):
        intent._canceled = True
    invoice._draft = False
    invoice._voided = True
    invoice.status_transitions["voided_at"] = now()
    schedule_webhook(ls.Event("invoice.voided", invoice))
    return invoice


def invoice_mark_uncollectible(id: str, **kwargs: Any) -> Any:
    if kwargs:
        raise UserError(400, "Received unknown parameter: " + ", ".join(kwargs))
    invoice = ls.Invoice._api_retrieve(id)
    if invoice.status not in ("open", "uncollectible"):
        raise UserError(400, f"Only an open invoice can be marked uncollectible; it is {invoice.status}.")
    invoice._uncollectible = True
    invoice.status_transitions["marked_uncollectible_at"] = now()
    schedule_webhook(ls.Event("invoice.marked_uncollectible", invoice))
    return invoice


_ACTIONS: dict[str, Callable[..., Any]] = {
    "pay": invoice_pay,
    "void": invoice_void,
    "mark_uncollectible": invoice_mark_uncollectible,
}


# --- HTTP ---------------------------------------------------------------------------------------
def requests_log() -> list[tuple[str, str, str]]:
    """(method, path, Idempotency-Key) of every request to /v1/invoices/..., oldest first."""
    return list(ls.store.get(_REQUESTS, []))


@web.middleware
async def _log_invoice_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/invoices"):
        entry = (request.method, request.path, request.headers.get("Idempotency-Key", ""))
        ls.store.setdefault(_REQUESTS, []).append(entry)
    return await handler(request)


def _faults() -> dict[str, list[int]]:
    return ls.store.setdefault(_FAULTS, {})


@web.middleware
async def _injected_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    fault = _faults().get(request.path) if request.path.startswith("/v1/") else None
    if not fault or fault[1] <= 0:
        return await handler(request)
    fault[1] -= 1
    body = {"error": {"type": "api_error", "message": "An error occurred (injected by the stand-in)."}}
    return server.json_response(body, status=fault[0])


async def _post_faults(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    path = str(data.get("path") or "")
    try:
        status, times = int(data.get("status", 500)), int(data.get("times", 1))
    except (TypeError, ValueError):
        raise UserError(400, "status and times must be integers.") from None
    if not path.startswith("/v1/") or not 400 <= status <= 599 or not 1 <= times <= 1000:
        raise UserError(400, "A /v1/ path, a status from 400 to 599 and 1 to 1000 times.")
    _faults()[path] = [status, times]
    return server.json_response({"path": path, "status": status, "times": times})


async def _delete_faults(request: web.Request) -> web.Response:
    _faults().clear()
    return server.json_response({"deleted": True})


@web.middleware
async def _invoice_actions(request: web.Request, handler: Handler) -> web.StreamResponse:
    # localstripe routed these to its own functions first; a middleware answers before routing.
    match = _INVOICE_ACTION.match(request.path)
    if request.method == "POST" and _ATTACH.match(request.path):
        response = await handler(request)
        if response.status == 200 and isinstance(response, web.Response) and response.body:
            # Stripe tells webhooks about a card added to a customer (read by the id attached:
            # pm_card_visa and friends make a new card on every read)
            attached = json.loads(bytes(response.body))  # type: ignore[arg-type]
            schedule_webhook(
                ls.Event("payment_method.attached", ls.PaymentMethod._api_retrieve(attached["id"]))
            )
        return response
    if request.method != "POST" or match is None:
        return await handler(request)
    data = await server.get_post_data(request) or {}
    expand = data.pop("expand", None)
    invoice = _ACTIONS[match["action"]](match["id"], **data)
    return server.json_response(invoice._export(expand=expand))


async def _get_clock(request: web.Request) -> web.Response:
    return server.json_response({"now": now(), "offset": int(ls.store.get(_OFFSET, 0))})


async def _post_advance(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    try:
        seconds = int(data.get("seconds", 0)) + 86400 * int(data.get("days", 0))
    except (TypeError, ValueError):
        raise UserError(400, "days and seconds must be integers.") from None
    if seconds <= 0 or seconds > 5 * 366 * 86400:
        raise UserError(400, "Advance by 1 second to 5 years.", {"param": "days"})
    issued = advance(seconds)
    return server.json_response({"now": now(), "invoices": issued})


async def _post_decline_later(request: web.Request) -> web.Response:
    pm = ls.PaymentMethod._api_retrieve(request.match_info["id"])
    data = await server.get_post_data(request) or {}
    codes = {
        k: str(data[k])[:64] for k in ("decline_code", "advice_code", "network_advice_code") if data.get(k)
    }
    _decline_later()[pm.id] = codes
    return server.json_response({"id": pm.id, **codes})


def install(app: web.Application, standin: dict[str, Any]) -> None:
    """Hook into the stand-in app; `standin` is stripe_standin's namespace (it may run as __main__)."""
    refuse_declined = standin["_refuse_declined"]

    def refuse_declined_now(pm: Any, card_number: str) -> None:
        # Stripe's chargeCustomerFail card is attached fine at checkout; it is later charges that fail.
        if card_number != "4000000000000341":
            refuse_declined(pm, card_number)

    standin["_refuse_declined"] = refuse_declined_now
    app.middlewares.insert(0, _log_invoice_requests)
    app.middlewares.insert(1, _injected_faults)  # logged first; answered before auth and idempotency
    app.middlewares.append(_invoice_actions)  # inside the idempotency replay
    app.router.add_get("/_dev/clock", _get_clock)
    app.router.add_post("/_dev/clock/advance", _post_advance)
    app.router.add_post("/_dev/payment_methods/{id}/decline_later", _post_decline_later)
    app.router.add_post("/_dev/faults", _post_faults)
    app.router.add_delete("/_dev/faults", _delete_faults)
