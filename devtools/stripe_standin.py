"""Dev-only Stripe stand-in: localstripe plus what dj-stripe 2.11 and our checkout flow need.

Never import this from production code: importing it patches localstripe's classes in place.

    python -m devtools.stripe_standin --host 127.0.0.1 --port 8420 \\
        [--webhook-url URL --webhook-secret whsec_...] [--state-file var/stripe-standin.pickle]

On top of localstripe 1.15 it adds `GET /v1/account`, Prices, Checkout Sessions with a test
payment page (`/_dev/checkout/{id}`: the plan, its interval and trial, why a card was declined),
pages to return to after it (`/_dev/return/success`, `/_dev/return/cancel`, for the README's demo),
checkout sessions listed by customer and status and expired on request,
Stripe-shaped 404/402 errors, idempotency keys, and the fields dj-stripe re-fetches when it
processes invoice, subscription, charge and payment events;
PaymentIntents take a description, declines happen at confirm with Stripe's decline codes,
refunds take a reason, refuse more than is left and send refund.created / charge.refunded,
subscriptions with a trial start "trialing", updates take proration_behavior; Billing Meters,
meter events and their summaries, and metered prices (devtools/standin_meters.py). State lives in
memory (localstripe's own pickle to /tmp is off), or in --state-file across restarts.

Where it still differs from Stripe (known, accepted for development and tests):
- never sends checkout.session.expired on its own; no webhook retries; renewals happen only when
  its clock is advanced (devtools/standin_clock.py: `POST /_dev/clock/advance`, not Stripe's
  test-clock API);
- one licensed price per subscription (plus any metered prices: devtools/standin_meters.py bills
  them at renewal); no coupons, taxes, setup mode, Billing Portal;
- a trialing subscription gets no $0 invoice, and a trial ended early (`trial_end=now`) is not
  invoiced at once; in payment mode a Checkout Session always creates a customer;
- 3-D Secure cards are refused with 402 authentication_required instead of a challenge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import logging
import os
import pickle
import signal
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from localstripe import resources as ls
from localstripe.errors import UserError
from localstripe.webhooks import (
    _webhooks,
    register_webhook,
    schedule_webhook,
)

from billing.money import format_money  # plain Python (Babel): no Django needed

with warnings.catch_warnings():
    # localstripe routes plain functions, which aiohttp deprecates once per route.
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import server

logger = logging.getLogger("devtools.stripe_standin")  # same name under -m
app: web.Application = server.app
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCOUNT_ID = "acct_1StandinDev00000"
WILDCARD_HOSTS = {"", "0.0.0.0", "::"}  # noqa: S104 (listed to be refused)
PUBLIC_URL = web.AppKey("public_url", str)
# Test cards whose decline_code is not Stripe's default `generic_decline`.
DECLINE_CODES = {
    "4000000000009995": "insufficient_funds",
    "4000000000009987": "lost_card",
    "4000000000009979": "stolen_card",
}


# --- 1. No pickle: localstripe writes its whole store to /tmp on every change ---------------------
def _keep_in_memory(self: Any) -> None:
    return None


ls.Store.dump_to_disk = _keep_in_memory


# --- 2. Stripe-shaped errors ----------------------------------------------------------------------
def _no_such(object_name: str, id: str) -> UserError:
    # dj-stripe skips an event whose object is gone only when the 404 looks like Stripe's.
    return UserError(
        404,
        f"No such {object_name}: '{id}'",
        {"code": "resource_missing", "param": "id"},
    )


def _retrieve(cls: Any, id: str) -> Any:
    obj = ls.store.get(f"{cls.object}:{id}")
    if obj is None:
        raise _no_such(cls.object, id)
    return obj


def _delete(cls: Any, id: str) -> Any:
    _retrieve(cls, id)
    del ls.store[f"{cls.object}:{id}"]
    return ls.DeletedObject(id, cls.object)


ls.StripeObject._api_retrieve = classmethod(_retrieve)
ls.StripeObject._api_delete = classmethod(_delete)
_user_error_init = UserError.__init__


def _user_error_with_card_type(
    self: UserError, code: int, message: str | None = None, contents: dict | None = None
) -> None:
    _user_error_init(self, code, message, contents)
    if code == 402:  # Stripe answers declines as card errors, with a decline_code
        self.body["error"]["type"] = "card_error"
        if self.body["error"].get("code") == "card_declined":
            self.body["error"].setdefault("decline_code", "generic_decline")


UserError.__init__ = _user_error_with_card_type


# --- 3. Fields dj-stripe reads or expands that localstripe lacks -------------------------------
def _empty_list(self: Any) -> list:
    return []


for _cls in (ls.Invoice, ls.InvoiceLineItem, ls.InvoiceItem, ls.Subscription, ls.SubscriptionItem):
    _cls.discounts = property(_empty_list)  # dj-stripe expands `discounts`
ls.SubscriptionItem.subscription = property(lambda self: self._subscription)
_plain_export = ls.StripeObject._export


def _export(self: Any, expand: list[str] | None = None) -> dict:
    obj = _plain_export(self, expand=expand)
    if "default_tax_rates" in obj and obj["default_tax_rates"] is None:
        obj["default_tax_rates"] = []  # Stripe sends a list; dj-stripe iterates it
    if obj.get("object") in ("subscription_item", "item") and obj.get("quantity") is None:
        obj.pop("quantity", None)  # a metered price's item has no quantity at Stripe
    # Stripe sends "includable" fields only when expanded; localstripe must hold them to expand.
    for path in getattr(self, "_includable", ()):
        if not any(e == path or e.startswith(path + ".") for e in expand or []):
            *parents, leaf = path.split(".")
            target = obj
            for key in parents:
                target = target[key]
            target.pop(leaf, None)
    return obj


ls.StripeObject._export = _export


def _invoice_subscription_details(self: Any) -> dict | None:
    # Stripe copies the subscription's metadata onto each of its invoices; localstripe does not.
    if not getattr(self, "subscription", None):
        return None
    return {"metadata": dict(ls.Subscription._api_retrieve(self.subscription).metadata or {})}


ls.Invoice.subscription_details = property(_invoice_subscription_details)


# --- 4. Prices (a recurring price has a localstripe Plan of the same id behind it) ---------------
class Price(ls.StripeObject):
    object = "price"
    _id_prefix = "price_"
    _includable = ("currency_options", "tiers")
    lookup_key: str | None

    def __init__(
        self,
        currency: str | None = None,
        unit_amount: Any = None,
        product: str | None = None,
        product_data: dict | None = None,
        recurring: dict | None = None,
        lookup_key: str | None = None,
        transfer_lookup_key: Any = False,
        nickname: str | None = None,
        metadata: dict | None = None,
        active: Any = True,
        tax_behavior: str | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_unknown(kwargs)
        unit_amount = ls.try_convert_to_int(unit_amount)
        active = ls.try_convert_to_bool(active)
        recurring = _recurring(recurring)
        try:
            assert isinstance(currency, str) and currency
            assert isinstance(unit_amount, int) and unit_amount >= 0
            assert (product is None) != (product_data is None)
            assert lookup_key is None or isinstance(lookup_key, str)
            assert isinstance(active, bool)
        except AssertionError:
            raise UserError(400, "Bad request") from None
        holder = _price_with_lookup_key(lookup_key)
        if holder is not None and ls.try_convert_to_bool(transfer_lookup_key) is not True:
            raise UserError(400, f"A price (`{holder.id}`) already uses lookup key `{lookup_key}`.")
        if product_data is not None:
            product = ls.Product(**product_data).id
        else:
            ls.Product._api_retrieve(product)  # Stripe-style 404

        # All exceptions must be raised before this point (localstripe's convention).
        super().__init__()
        if holder is not None:
            holder.lookup_key = None
        self.active = active
        self.billing_scheme = "per_unit"
        self.currency = currency.lower()
        self.currency_options = {self.currency: {"unit_amount": unit_amount, "tax_behavior": None}}
        self.custom_unit_amount = None
        self.lookup_key = lookup_key
        self.metadata = metadata or {}
        self.nickname = nickname
        self.product = product
        self.recurring = recurring
        self.tax_behavior = tax_behavior or "unspecified"
        self.tiers = None
        self.tiers_mode = None
        self.transform_quantity = None
        self.type = "one_time" if recurring is None else "recurring"
        self.unit_amount = unit_amount
        self.unit_amount_decimal = str(unit_amount)
        if recurring is not None:
            ls.Plan(
                id=self.id,
                amount=unit_amount,
                currency=self.currency,
                product=product,
                interval=recurring["interval"],
                interval_count=recurring["interval_count"],
                nickname=nickname,
                usage_type=recurring["usage_type"],
                metadata=dict(self.metadata),
            )
        schedule_webhook(ls.Event("price.created", self))

    def _update(self, **data: Any) -> None:
        if "active" in data:
            data["active"] = ls.try_convert_to_bool(data["active"])
        super()._update(**data)
        schedule_webhook(ls.Event("price.updated", self))

    @classmethod
    def _api_list_all(
        cls, url: str | None, limit: Any = None, starting_after: str | None = None, **filters: Any
    ) -> Any:
        # Stripe's filter is `lookup_keys[]`; a single `lookup_key` is accepted too.
        keys = filters.pop("lookup_keys", None) or filters.pop("lookup_key", None)
        keys = [keys] if isinstance(keys, str) else keys
        active = ls.try_convert_to_bool(filters.pop("active", None))
        product, type_ = filters.pop("product", None), filters.pop("type", None)
        _refuse_unknown(filters)
        li = super()._api_list_all(url, limit=limit, starting_after=starting_after)
        li._list = [
            p
            for p in li._list
            if (keys is None or p.lookup_key in keys)
            and (active is None or p.active is active)
            and (product is None or p.product == product)
            and (type_ is None or p.type == type_)
        ]
        return li


def _refuse_unknown(params: dict) -> None:
    if params:
        raise UserError(400, "Received unknown parameter: " + ", ".join(params))


def _recurring(recurring: dict | None) -> dict | None:
    if recurring is None:
        return None
    interval = recurring.get("interval") if isinstance(recurring, dict) else None
    count = ls.try_convert_to_int(recurring.get("interval_count", 1)) if interval else None
    if interval not in ("day", "week", "month", "year") or not isinstance(count, int) or count < 1:
        raise UserError(400, "Bad request", {"param": "recurring"})
    return {
        "interval": interval,
        "interval_count": count,
        "meter": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def _price_with_lookup_key(lookup_key: str | None) -> Price | None:
    if lookup_key is None:
        return None
    prices = Price._api_list_all(None, limit=1, lookup_keys=[lookup_key])._list
    return prices[0] if prices else None


def _price_of_plan(plan: Any) -> Any:
    """In Stripe every plan is also a price: SubscriptionItem.price, which dj-stripe requires."""
    price = ls.store.get("price:" + plan.id)
    if price is not None:
        return price
    return {
        "id": plan.id,
        "object": "price",
        "active": plan.active,
        "billing_scheme": "per_unit",
        "created": plan.created,
        "currency": plan.currency,
        "livemode": False,
        "lookup_key": None,
        "metadata": plan.metadata,
        "nickname": plan.nickname,
        "product": plan.product,
        "recurring": _recurring({"interval": plan.interval, "interval_count": plan.interval_count}),
        "tax_behavior": "unspecified",
        "type": "recurring",
        "unit_amount": plan.amount,
        "unit_amount_decimal": str(plan.amount),
    }


ls.SubscriptionItem.price = property(lambda self: _price_of_plan(self.plan))


def _plan_items(items: Any) -> Any:
    """Let subscriptions take `items[].price`: localstripe subscribes to a plan of that id."""
    for item in items if isinstance(items, list) else []:
        price_id = item.pop("price", None) if isinstance(item, dict) else None
        if price_id is None:
            continue
        price = ls.store.get("price:" + price_id)
        if price is None and ls.store.get("plan:" + price_id) is None:
            raise _no_such("price", price_id)
        if price is not None and price.recurring is None:
            raise UserError(
                400,
                "The price specified is set to `type=one_time` but this field "
                "only accepts prices with `type=recurring`.",
                {"param": "items"},
            )
        item["plan"] = price_id
    return items


def _is_metered(plan_id: str) -> bool:
    """A price on a Billing Meter (`recurring.usage_type=metered`): billed in arrears from the
    meter's usage, and its subscription item has no quantity."""
    price = ls.store.get("price:" + plan_id)
    return bool(price is not None and (price.recurring or {}).get("usage_type") == "metered")


def _checked_items(items: Any, param: str = "items") -> list[dict]:
    """`items[]` (prices already turned into plans) as Stripe takes them: a metered price takes no
    quantity, and every price of one subscription bills on the same interval."""
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise UserError(400, "Bad request", {"param": param})
    for index, item in enumerate(items):
        plan_id = item.get("plan")
        if isinstance(plan_id, str) and _is_metered(plan_id) and item.get("quantity") is not None:
            raise UserError(
                400,
                f"Quantity should not be specified where usage_type is `metered`. "
                f"Remove quantity from `{param}[{index}]`.",
                {"param": f"{param}[{index}][quantity]"},
            )
    return items


def _same_interval(plans: list[Any]) -> None:
    if len({(plan.interval, plan.interval_count) for plan in plans}) > 1:
        raise UserError(
            400,
            "All prices on a subscription must have the same `recurring.interval` and "
            "`recurring.interval_count`.",
            {"param": "items"},
        )


def _new_item(subscription_id: str, spec: dict) -> Any:
    metered = _is_metered(spec["plan"])
    item = ls.SubscriptionItem(
        subscription=subscription_id,
        plan=spec["plan"],
        quantity=1 if metered else spec.get("quantity") or 1,
        metadata=spec.get("metadata"),
    )
    if metered:
        item.quantity = None  # exported without one (see _export)
    return item


def _refresh_event(subscription: Any, event_type: str) -> None:
    """localstripe snapshots an event's object when it is created; the items added after that
    belong in it (the event is sent later, from the event loop)."""
    for key, event in list(ls.store.items()):
        if (
            str(key).startswith("event:")
            and event.type == event_type
            and event.data["object"].get("id") == subscription.id
        ):
            event.data = {"object": subscription._export()}


_subscription_init, _subscription_update = ls.Subscription.__init__, ls.Subscription._update


def _subscription_init_with_prices(self: Any, items: Any = None, **kwargs: Any) -> None:
    """Stripe's subscriptions take several prices (one licensed plan price and the metered prices
    of its features, in our checkout); localstripe's hold one: it gets the first licensed price,
    and the others become items of the subscription once it exists."""
    items = _plan_items(items)
    rest: list[dict] = []
    if isinstance(items, list) and items:
        items = sorted(_checked_items(items), key=lambda i: _is_metered(str(i.get("plan"))))
        _same_interval([ls.Plan._api_retrieve(str(i.get("plan"))) for i in items])
        items, rest = items[:1], items[1:]
        for spec in items:
            if _is_metered(str(spec.get("plan"))):
                spec["quantity"] = None
    _subscription_init(self, items=items, **kwargs)
    for item in self.items._list:
        if _is_metered(item.plan.id):
            item.quantity = None
    for spec in rest:
        self.items._list.append(_new_item(self.id, spec))
    # localstripe leaves a trial subscription "incomplete" and never starts it; Stripe starts the
    # trial at once ("trialing", the first charge at trial_end).
    if self.trial_end is not None or self.trial_period_days is not None:
        self.status = "trialing"
        self.trial_start = self.start_date
        if self.trial_end is None:
            self.trial_end = self.start_date + int(self.trial_period_days) * 86400
    if rest:
        _refresh_event(self, "customer.subscription.created")


def _item_changes(subscription: Any, items: list[dict]) -> tuple[dict | None, set[str], list[dict]]:
    """An update's `items[]` against a subscription's items: the change of its licensed item (kept
    first, as localstripe expects), the ids of the items deleted, the items added. Everything is
    checked before anything changes."""
    current = {item.id: item for item in subscription.items._list}
    licensed_id = subscription.items._list[0].id
    licensed: dict | None = None
    deleted: set[str] = set()
    added: list[dict] = []
    for index, spec in enumerate(items):
        item_id = spec.get("id")
        if item_id is not None and item_id not in current:
            raise _no_such("subscription_item", str(item_id))
        if ls.try_convert_to_bool(spec.get("deleted", False)) is True:
            if item_id is None:
                raise UserError(400, "Deleting an item needs its id.", {"param": f"items[{index}][id]"})
            if item_id == licensed_id:
                raise UserError(
                    400,
                    "The stand-in keeps a subscription's licensed item: swap its price instead.",
                    {"param": f"items[{index}][deleted]"},
                )
            if spec.get("clear_usage") is not None and not _is_metered(current[item_id].plan.id):
                raise UserError(
                    400,
                    "clear_usage is only for items of metered prices.",
                    {"param": f"items[{index}][clear_usage]"},
                )
            deleted.add(item_id)
        elif item_id == licensed_id:
            licensed = {
                "plan": spec.get("plan") or current[item_id].plan.id,
                "quantity": spec.get("quantity"),
            }
        elif item_id is not None:
            if spec.get("plan") not in (None, current[item_id].plan.id):
                raise UserError(
                    400,
                    "The stand-in does not swap a metered item's price: delete it and add the new one.",
                    {"param": f"items[{index}][price]"},
                )
        else:
            if not isinstance(spec.get("plan"), str):
                raise UserError(400, "A new item needs a price.", {"param": f"items[{index}][price]"})
            if not _is_metered(spec["plan"]):
                raise UserError(
                    400,
                    "The stand-in holds one licensed price per subscription: swap its price instead.",
                    {"param": f"items[{index}][price]"},
                )
            added.append(spec)
    kept = [item for item in subscription.items._list if item.id not in deleted]
    plans = [item.plan for item in kept[1:]] + [ls.Plan._api_retrieve(spec["plan"]) for spec in added]
    plans.append(ls.Plan._api_retrieve(licensed["plan"] if licensed else kept[0].plan.id))
    _same_interval(plans)
    return licensed, deleted, added


def _subscription_update_with_prices(
    self: Any, items: Any = None, proration_behavior: str | None = None, **kwargs: Any
) -> None:
    # Stripe's current name for the old `prorate` flag.
    if proration_behavior is not None:
        if proration_behavior not in ("create_prorations", "none", "always_invoice"):
            raise UserError(
                400, f"Invalid proration_behavior: {proration_behavior}", {"param": "proration_behavior"}
            )
        kwargs.setdefault("prorate", proration_behavior != "none")
    items = _plan_items(items)
    if items is None:
        _subscription_update(self, items=None, **kwargs)
        return
    licensed, deleted, added = _item_changes(self, _checked_items(items))
    others = [item for item in self.items._list[1:] if item.id not in deleted]
    # localstripe replaces its one item on a price swap (with its proration); the others follow.
    _subscription_update(self, items=[licensed] if licensed else None, **kwargs)
    self.items._list = [self.items._list[0], *others, *(_new_item(self.id, spec) for spec in added)]


_item_period = ls.SubscriptionItem._current_period


def _item_period_in_trial(self: Any) -> dict[str, int]:
    """Stripe's first period of a trial is the trial: it ends at trial_end, where the first invoice
    is issued and the next period (a whole interval) starts. localstripe runs a whole interval
    from the start, trial or not. Once renewed, start_date is the trial's end and this no longer
    applies."""
    if self._subscription:
        subscription = ls.Subscription._api_retrieve(self._subscription)
        trial_end = subscription.trial_end
        # Only while trialing: a price change to another interval during the trial is invoiced at
        # once by localstripe, which makes the subscription active with a whole period from then.
        if (
            subscription.status == "trialing"
            and isinstance(trial_end, int)
            and subscription.start_date < trial_end
        ):
            return {"start": subscription.start_date, "end": trial_end}
    return dict(_item_period(self))


ls.Subscription.__init__ = _subscription_init_with_prices
ls.SubscriptionItem._current_period = _item_period_in_trial
ls.Subscription._update = _subscription_update_with_prices


# --- 4b. Payment intents and refunds as Stripe takes them -------------------------------------
_payment_intent_init = ls.PaymentIntent.__init__


def _payment_intent_init_with_description(
    self: Any, description: str | None = None, receipt_email: str | None = None, **kwargs: Any
) -> None:
    _payment_intent_init(self, **kwargs)
    self.description = description
    self.receipt_email = receipt_email


ls.PaymentIntent.__init__ = _payment_intent_init_with_description
_refund_init = ls.Refund.__init__


def _refund_init_like_stripe(self: Any, reason: str | None = None, **kwargs: Any) -> None:
    """Stripe refuses a refund above what is left on the charge, accepts a reason, and tells
    webhooks about it (`refund.created`, `charge.refunded`); localstripe does none of that."""
    if reason is not None and reason not in ("duplicate", "fraudulent", "requested_by_customer"):
        raise UserError(400, "Invalid reason: must be one of duplicate, fraudulent, requested_by_customer")
    amount = ls.try_convert_to_int(kwargs.get("amount"))
    charge_id = kwargs.get("charge")
    if charge_id is None and isinstance(kwargs.get("payment_intent"), str):
        intent = ls.PaymentIntent._api_retrieve(kwargs["payment_intent"])
        charge_id = intent.latest_charge.id if intent.latest_charge else None
    if charge_id is not None and isinstance(amount, int):
        charge = ls.Charge._api_retrieve(charge_id)
        left = charge.amount - charge.amount_refunded
        if amount > left:
            raise UserError(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                {"param": "amount", "code": "amount_too_large"},
            )
    _refund_init(self, **kwargs)
    self.reason = reason
    schedule_webhook(ls.Event("refund.created", self))
    schedule_webhook(ls.Event("charge.refunded", ls.Charge._api_retrieve(self.charge)))


ls.Refund.__init__ = _refund_init_like_stripe


# Stripe declines the "decline" test cards when a payment is confirmed; localstripe only when
# the card is attached to a customer. Decline them at charge time too, with Stripe's codes.
_charging_is_declined = ls.PaymentMethod._charging_is_declined


def _charging_is_declined_like_stripe(self: Any) -> bool:
    return bool(_charging_is_declined(self) or self._attaching_is_declined())


def _raise_failure_with_decline_code(self: Any) -> None:
    method = getattr(self, "payment_method", None)
    card = ls.PaymentMethod._api_retrieve(method) if str(method).startswith("pm_") else None
    number = getattr(card, "_card_number", "")
    raise UserError(
        402,
        self.failure_message,
        {
            "code": self.failure_code,
            "decline_code": DECLINE_CODES.get(number, "generic_decline"),
            "charge": self.id,
            "payment_intent": {"id": self.payment_intent} if self.payment_intent else None,
        },
    )


ls.PaymentMethod._charging_is_declined = _charging_is_declined_like_stripe
ls.Charge._raise_failure = _raise_failure_with_decline_code


# --- 5. Checkout Sessions ---------------------------------------------------------------------
class CheckoutLineItem(ls.StripeObject):
    object = "item"
    _id_prefix = "li_"

    def __init__(self, price: Price, quantity: int | None) -> None:
        super().__init__()
        self.amount_discount = 0
        # A metered price is billed in arrears: nothing of it is due at checkout.
        self.amount_subtotal = self.amount_total = price.unit_amount * (quantity or 0)
        self.amount_tax = 0
        self.currency = price.currency
        self.description = ls.Product._api_retrieve(price.product).name
        self.discounts: list = []
        self.price = price
        self.quantity = quantity


class CheckoutSession(ls.StripeObject):
    object = "checkout.session"
    _id_prefix = "cs_test_"
    _includable = ("line_items", "total_details.breakdown")

    def __init__(
        self,
        mode: str | None = None,
        line_items: Any = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
        customer: str | None = None,
        customer_email: str | None = None,
        client_reference_id: str | None = None,
        metadata: dict | None = None,
        subscription_data: dict | None = None,
        payment_intent_data: dict | None = None,
        payment_method_types: list | None = None,
        _page_base_url: str = "",
        **kwargs: Any,
    ) -> None:
        _refuse_unknown(kwargs)
        _refuse_unknown(
            {k: v for k, v in (subscription_data or {}).items() if k not in ("metadata", "trial_period_days")}
        )
        _refuse_unknown({k: v for k, v in (payment_intent_data or {}).items() if k != "metadata"})
        if mode not in ("payment", "subscription"):
            raise UserError(400, "mode must be `payment` or `subscription`.", {"param": "mode"})
        if not isinstance(success_url, str) or not success_url:
            raise UserError(400, "Missing required param: success_url.", {"param": "success_url"})
        if customer is not None and customer_email is not None:
            raise UserError(
                400,
                "You may only specify one of these parameters: customer, customer_email.",
                {"param": "customer_email"},
            )
        if customer is not None:
            ls.Customer._api_retrieve(customer)
        items = _checkout_line_items(line_items, mode)

        super().__init__()
        self.line_items = ls.List(f"/v1/checkout/sessions/{self.id}/line_items")
        self.line_items._list = [CheckoutLineItem(price, qty) for price, qty in items]
        total = sum(item.amount_total for item in self.line_items._list)
        self.amount_subtotal = self.amount_total = total
        self.cancel_url = cancel_url
        self.client_reference_id = client_reference_id
        self.currency = items[0][0].currency
        self.customer = customer
        self.customer_details: dict | None = None
        self.customer_email = customer_email
        self.discounts: list = []
        self.expires_at = self.created + 24 * 3600
        self.invoice: str | None = None
        self.metadata = metadata or {}
        self.mode = mode
        self.payment_intent: str | None = None
        self.payment_method_types = payment_method_types or ["card"]
        self.payment_status = "unpaid"
        self.setup_intent = None
        self.status = "open"
        self.subscription: str | None = None
        self.success_url = success_url
        self.total_details = {
            "amount_discount": 0,
            "amount_shipping": 0,
            "amount_tax": 0,
            "breakdown": {"discounts": [], "taxes": []},
        }
        self.ui_mode = "hosted"
        self.url = f"{_page_base_url}/_dev/checkout/{self.id}"
        self._subscription_metadata = dict((subscription_data or {}).get("metadata") or {})
        self._trial_period_days = (subscription_data or {}).get("trial_period_days")
        self._payment_intent_metadata = dict((payment_intent_data or {}).get("metadata") or {})

    def _complete(self, card_number: str) -> None:
        """Play Stripe's part when the buyer pays: customer, card, then subscription or payment."""
        if self.status != "open":
            raise UserError(400, f"This Checkout Session is {self.status}.")
        if not (card_number.isdigit() and len(card_number) == 16):
            raise UserError(
                402, "Your card number is incorrect.", {"code": "incorrect_number", "param": "card"}
            )
        pm = ls.PaymentMethod(
            type="card",
            card={
                "number": card_number,
                "exp_month": 12,
                "exp_year": time.gmtime().tm_year + 3,
                "cvc": "123",
            },
        )
        _refuse_declined(pm, card_number)
        customer = (
            ls.Customer._api_retrieve(self.customer)
            if self.customer
            else ls.Customer(email=self.customer_email)
        )
        if self.mode == "subscription":
            self._subscribe(customer, pm)
        else:
            self._pay(customer, pm)
        self.customer = customer.id
        self.customer_details = {
            "address": customer.address,
            "email": customer.email,
            "name": customer.name,
            "phone": customer.phone,
            "tax_exempt": "none",
            "tax_ids": [],
        }
        self.status, self.payment_status = "complete", "paid"
        schedule_webhook(ls.Event("checkout.session.completed", self))

    def _subscribe(self, customer: Any, pm: Any) -> None:
        ls.PaymentMethod._api_attach(pm.id, customer=customer.id)
        # localstripe charges invoices to the customer's default method (Stripe: the sub's).
        customer.invoice_settings["default_payment_method"] = pm.id
        subscription = ls.Subscription._api_create(
            customer=customer.id,
            items=[
                {"plan": item.price.id}
                if item.quantity is None
                else {"plan": item.price.id, "quantity": item.quantity}
                for item in self.line_items._list
            ],
            metadata=dict(self._subscription_metadata),
            payment_behavior="error_if_incomplete",
            trial_period_days=self._trial_period_days,
        )
        self.subscription, self.invoice = subscription.id, subscription.latest_invoice

    def _pay(self, customer: Any, pm: Any) -> None:
        intent = ls.PaymentIntent._api_create(
            amount=self.amount_total,
            currency=self.currency,
            customer=customer.id,
            payment_method=pm.id,
            metadata=dict(self._payment_intent_metadata),
            confirm=True,
        )
        self.payment_intent = intent.id

    @classmethod
    def _api_list_all(
        cls, url: str | None, limit: Any = None, starting_after: str | None = None, **filters: Any
    ) -> Any:
        """Stripe's filters of checkout.sessions.list that we use: customer and status."""
        customer, status = filters.pop("customer", None), filters.pop("status", None)
        _refuse_unknown(filters)
        li = super()._api_list_all(url, limit=limit, starting_after=starting_after)
        li._list = [
            session
            for session in sorted(li._list, key=lambda s: s.created, reverse=True)
            if (customer is None or session.customer == customer)
            and (status is None or session.status == status)
        ]
        return li

    @classmethod
    def _api_expire(cls, id: str, **kwargs: Any) -> Any:
        """POST /v1/checkout/sessions/{id}/expire: an open session can no longer be paid."""
        _refuse_unknown(kwargs)
        session = cls._api_retrieve(id)
        if session.status != "open":
            raise UserError(
                400,
                f"Only an open Checkout Session can be expired; this one is {session.status}.",
            )
        session.status = "expired"
        return session

    @classmethod
    def _api_list_line_items(
        cls, id: str, limit: Any = None, starting_after: str | None = None, **kwargs: Any
    ) -> Any:
        _refuse_unknown(kwargs)
        session = cls._api_retrieve(id)
        page = ls.List(session.line_items.url, limit=limit, starting_after=starting_after)
        page._list = session.line_items._list
        return page


def _checkout_line_items(line_items: Any, mode: str) -> list[tuple[Price, int | None]]:
    """Stripe's rules for `line_items[]`: a price each (no price_data in the stand-in), a positive
    quantity for a licensed price and none for a metered one, one currency, and in subscription
    mode recurring prices of one interval (at least one of them licensed, in the stand-in)."""
    if not isinstance(line_items, list) or not line_items:
        raise UserError(400, "Missing required param: line_items.", {"param": "line_items"})
    items: list[tuple[Price, int | None]] = []
    for index, item in enumerate(line_items):
        price_id = item.get("price") if isinstance(item, dict) else None
        if not isinstance(price_id, str):
            raise UserError(
                400, "Each line item needs a price (no price_data).", {"param": f"line_items[{index}][price]"}
            )
        price = Price._api_retrieve(price_id)
        if (price.recurring or {}).get("usage_type") == "metered":
            if item.get("quantity") is not None:
                raise UserError(
                    400,
                    "Quantity should not be specified where usage_type is `metered`. "
                    f"Remove quantity from `line_items[{index}]`.",
                    {"param": f"line_items[{index}][quantity]"},
                )
            items.append((price, None))
            continue
        quantity = ls.try_convert_to_int(item.get("quantity", 1))
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise UserError(
                400, "Each line item needs a positive quantity.", {"param": f"line_items[{index}][quantity]"}
            )
        items.append((price, quantity))
    if len({price.currency for price, _ in items}) != 1:
        raise UserError(400, "All line items must share one currency.", {"param": "line_items"})
    recurring = [price for price, _ in items if price.recurring is not None]
    if mode == "payment" and recurring:
        raise UserError(
            400,
            "You must be in subscription mode to use recurring prices.",
            {"param": "line_items"},
        )
    if mode == "subscription":
        if len(recurring) != len(items):
            raise UserError(
                400,
                "In subscription mode every line item must be a recurring price (the stand-in "
                "does not add one-time prices to a first invoice).",
                {"param": "line_items"},
            )
        intervals = {
            ((p.recurring or {}).get("interval"), (p.recurring or {}).get("interval_count"))
            for p in recurring
        }
        if len(intervals) != 1:
            raise UserError(
                400,
                "All recurring prices of a Checkout Session must have the same interval.",
                {"param": "line_items"},
            )
        if sum(1 for _, quantity in items if quantity is not None) != 1:
            # localstripe subscriptions are built around one licensed item.
            raise UserError(
                400,
                "The stand-in supports exactly one licensed price (and any metered ones) in "
                "subscription mode.",
                {"param": "line_items"},
            )
    return items


def _refuse_declined(pm: Any, card_number: str) -> None:
    # Checked before anything is created: a declined Checkout attempt leaves no subscription.
    if pm._attaching_is_declined() or pm._charging_is_declined():
        raise UserError(
            402,
            "Your card was declined.",
            {
                "code": "card_declined",
                "param": "card",
                "decline_code": DECLINE_CODES.get(card_number, "generic_decline"),
            },
        )
    if pm._requires_authentication():
        raise UserError(
            402,
            "3D Secure test cards are not supported by the stand-in.",
            {
                "code": "authentication_required",
                "decline_code": "authentication_required",
            },
        )


# --- 6. HTTP: routes and middlewares ----------------------------------------------------------
def _account() -> dict:
    """Shape of Stripe's account fixture, trimmed; dj-stripe syncs it as the owner account."""
    nothing_due: dict[str, Any] = {
        "alternatives": [],
        "current_deadline": None,
        "currently_due": [],
        "disabled_reason": None,
        "errors": [],
        "eventually_due": [],
        "past_due": [],
        "pending_verification": [],
    }
    return {
        "id": ACCOUNT_ID,
        "object": "account",
        "business_type": None,
        "type": "standard",
        "business_profile": {
            "mcc": None,
            "name": "Stripe stand-in",
            "product_description": None,
            "support_address": None,
            "support_email": None,
            "support_phone": None,
            "support_url": None,
            "url": None,
        },
        "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True,
        "controller": {"type": "account"},
        "country": "US",
        "created": 1700000000,
        "default_currency": "usd",
        "details_submitted": True,
        "email": "standin@example.com",
        "metadata": {},
        "payouts_enabled": True,
        "external_accounts": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/accounts/{ACCOUNT_ID}/external_accounts",
        },
        "future_requirements": nothing_due,
        "requirements": nothing_due,
        "settings": {
            "branding": {
                "icon": None,
                "logo": None,
                "primary_color": None,
                "secondary_color": None,
            },
            "card_payments": {
                "decline_on": {"avs_failure": False, "cvc_failure": False},
                "statement_descriptor_prefix": None,
            },
            "dashboard": {"display_name": "Stripe stand-in", "timezone": "Etc/UTC"},
            "payments": {"statement_descriptor": "STANDIN"},
            "payouts": {
                "debit_negative_balances": True,
                "statement_descriptor": None,
                "schedule": {"delay_days": 2, "interval": "daily"},
            },
        },
        "tos_acceptance": {"date": None, "ip": None, "user_agent": None},
    }


async def _get_account(request: web.Request) -> web.Response:
    return server.json_response(_account())


async def _create_checkout_session(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    expand = data.pop("expand", None)
    base = app.get(PUBLIC_URL) or f"{request.scheme}://{request.host}"
    session = CheckoutSession(**data, _page_base_url=base)
    return server.json_response(session._export(expand=expand))


async def _checkout_page(request: web.Request) -> web.Response:
    session = CheckoutSession._api_retrieve(request.match_info["id"])
    return web.Response(text=_render_checkout(session), content_type="text/html")


async def _complete_checkout(request: web.Request) -> web.StreamResponse:
    """The test page's form (redirects like Stripe) or a JSON call (answers the session)."""
    session = CheckoutSession._api_retrieve(request.match_info["id"])
    wants_json = request.content_type == "application/json"
    data = await server.get_post_data(request) or {}
    try:
        session._complete("".join(str(data.get("card", "")).split()))
    except UserError as error:
        if wants_json:
            raise
        details = error.body["error"]
        page = _render_checkout(
            session,
            error=details.get("message"),
            decline_code=str(details.get("decline_code") or details.get("code") or ""),
        )
        return web.Response(text=page, status=error.code, content_type="text/html")
    if wants_json:
        return server.json_response(session._export())
    raise web.HTTPSeeOther(session.success_url.replace("{CHECKOUT_SESSION_ID}", session.id))


# Why a test card was declined, as a person reads it (Stripe's decline_code in brackets).
DECLINE_REASONS = {
    "generic_decline": "the bank declined it without giving a reason",
    "insufficient_funds": "insufficient funds",
    "lost_card": "the card was reported lost",
    "stolen_card": "the card was reported stolen",
    "authentication_required": "the bank asks for 3-D Secure, which the stand-in does not do",
    "incorrect_number": "the card number is incorrect",
}
_PAGE_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a}"
    "h1{font-size:1.6rem;margin-bottom:.2rem}.terms{font-size:1.1rem;margin:.2rem 0 1.2rem}"
    ".box{border:1px solid #ddd;border-radius:8px;padding:1rem 1.2rem;margin:1rem 0}"
    "input{font:inherit;padding:.4rem;width:12rem}button{font:inherit;padding:.45rem 1rem;"
    "background:#635bff;color:#fff;border:0;border-radius:6px;cursor:pointer}"
    ".alert{background:#fdecea;border:1px solid #f5b5ae;border-radius:6px;padding:.7rem 1rem}"
    ".ok{background:#e6f6ea;border:1px solid #a8dcb4;border-radius:6px;padding:.7rem 1rem}"
    "small,.hint{color:#666}"
)


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_PAGE_STYLE}</style></head><body>{body}"
        "<p><small>Dev-only Stripe stand-in: no real payment.</small></p></body></html>"
    )


def _every(interval: str, count: int) -> str:
    return f"/{interval}" if count == 1 else f" every {count} {interval}s"


def _per_unit(price: Any) -> str:
    """A metered price as the buyer reads it: '€0.01 per call (API calls)', from the unit and the
    feature name our catalog puts in its metadata (Stripe's page shows the price's own terms)."""
    metadata = price.metadata or {}
    unit = str(metadata.get("unit_label") or "unit")
    unit = unit[:-1] if unit.endswith("s") and len(unit) > 1 else unit
    name = str(metadata.get("feature_name") or "")
    amount = format_money(price.unit_amount, price.currency.upper())
    return f"{amount} per {unit}" + (f" ({name})" if name else "")


def checkout_terms(session: CheckoutSession) -> str:
    """What the buyer agrees to, as Stripe's page says it: '14 days free, then €8.99/month',
    '€8.99/month', '€89.00/year', '€15.00' for a one-time payment; metered prices follow, billed
    at each period's end: '€8.99/month, plus €0.01 per call (API calls)'."""
    item = session.line_items._list[0]
    amount = format_money(session.amount_total, session.currency.upper())
    recurring = getattr(item.price, "recurring", None)
    if session.mode != "subscription" or not recurring:
        return amount
    price = f"{amount}{_every(recurring['interval'], int(recurring.get('interval_count') or 1))}"
    metered = [_per_unit(i.price) for i in session.line_items._list if i.quantity is None]
    if metered:
        price += ", plus " + " and ".join(metered)
    trial = ls.try_convert_to_int(session._trial_period_days)
    if isinstance(trial, int) and trial > 0:
        return f"{trial} day{'s' if trial > 1 else ''} free, then {price}"
    return price


def _render_checkout(session: CheckoutSession, error: str | None = None, decline_code: str = "") -> str:
    e = html.escape
    names = ", ".join(e(item.description) for item in session.line_items._list if item.quantity is not None)
    alert = ""
    if error:
        reason = DECLINE_REASONS.get(decline_code, decline_code.replace("_", " "))
        because = f": {e(reason)} <small>({e(decline_code)})</small>" if decline_code else ""
        message = error.rstrip(".") if because else error
        alert = f'<p class="alert" role="alert"><strong>{e(message)}</strong>{because}</p>'
    if session.status == "open":
        action = f"/_dev/checkout/{e(session.id)}/complete"
        body = (
            f'{alert}<form class="box" method="post" action="{action}"><label>Card number<br>'
            '<input name="card" value="4242424242424242" size="19" inputmode="numeric"></label> '
            f'<button type="submit">{"Start subscription" if session.mode == "subscription" else "Pay"}'
            "</button></form>"
            '<p class="hint">Test cards: 4242 4242 4242 4242 pays; 4000 0000 0000 0002 is declined, '
            "4000 0000 0000 9995 has insufficient funds.</p>"
        )
        if session.cancel_url:
            body += f'<p><a href="{e(session.cancel_url)}">Cancel and go back</a></p>'
    else:
        body = f"<p>This checkout session is {e(session.status)}.</p>"
    heading = f"Subscribe to {names}" if session.mode == "subscription" else f"Pay for {names}"
    return _page(
        "Stripe stand-in checkout",
        f'<h1>{heading}</h1><p class="terms"><strong>{e(checkout_terms(session))}</strong></p>{body}',
    )


async def _return_page(request: web.Request) -> web.Response:
    """Where the README's demo sends the buyer back (success_url / cancel_url): a page, not JSON."""
    done = request.match_info["outcome"] == "success"
    session_id = request.query.get("session_id", "")
    session = ls.store.get(f"checkout.session:{session_id}") if session_id else None
    e = html.escape
    if done:
        what = (
            f"<p>{e(checkout_terms(session))} for "
            f"{e(', '.join(i.description for i in session.line_items._list if i.quantity is not None))}.</p>"
            if isinstance(session, CheckoutSession)
            else ""
        )
        body = (
            '<h1>Thank you</h1><p class="ok">Payment details accepted. Stripe now tells the '
            "back-office, which grants the features within a second or two.</p>"
            f"{what}<p>You can close this page.</p>"
        )
    else:
        body = '<h1>Checkout cancelled</h1><p class="box">Nothing was charged. You can close this page.</p>'
    return web.Response(text=_page("Checkout", body), content_type="text/html")


def _product_features(id: str, **kwargs: Any) -> Any:
    # dj-stripe lists a product's entitlement features whenever it syncs a product.
    ls.Product._api_retrieve(id)
    return ls.List(f"/v1/products/{id}/features")


async def _unregister_webhook(request: web.Request) -> web.Response:
    _webhooks.pop(request.match_info["id"], None)
    return web.Response()


@web.middleware
async def _auth_except_dev_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The checkout page is opened by a browser, which holds no API key.
    if request.path.startswith("/_dev/"):
        return await handler(request)
    return await server.auth_middleware(request, handler)


@web.middleware
async def _stripe_shaped_unknown_urls(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        if not request.path.startswith("/v1/"):
            raise
        message = f"Unrecognized request URL ({request.method}: {request.path})."
        return server.json_response(
            {"error": {"type": "invalid_request_error", "message": message}}, status=404
        )


@web.middleware
async def _idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Replay the first answer to a repeated Idempotency-Key, as Stripe does for POSTs."""
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    # Cached in the store so that `DELETE /_config/data` forgets it too.
    cache_key = f"idempotency:{request.path}:{key}"
    cached = ls.store.get(cache_key)
    if cached is not None:
        status, body = cached
        return web.Response(
            body=body,
            status=status,
            content_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        response = await handler(request)
    except UserError as error:
        response = error.to_response()
    if isinstance(response, web.Response) and response.status < 500:
        ls.store[cache_key] = (response.status, response.body)
    return response


def _install() -> None:
    middlewares = app.middlewares
    middlewares[middlewares.index(server.auth_middleware)] = _auth_except_dev_pages
    middlewares.extend([_stripe_shaped_unknown_urls, _idempotency])
    router = app.router
    router.add_get("/v1/account", _get_account)
    for method, url, make in (
        ("POST", "/v1/prices", server.api_create),
        ("GET", "/v1/prices/{id}", server.api_retrieve),
        ("POST", "/v1/prices/{id}", server.api_update),
        ("GET", "/v1/prices", server.api_list_all),
    ):
        router.add_route(method, url, make(Price, url))
    router.add_post("/v1/checkout/sessions", _create_checkout_session)
    router.add_get(
        "/v1/checkout/sessions/{id}",
        server.api_retrieve(CheckoutSession, "/v1/checkout/sessions/{id}"),
    )
    router.add_get(
        "/v1/checkout/sessions",
        server.api_list_all(CheckoutSession, "/v1/checkout/sessions"),
    )
    router.add_post(
        "/v1/checkout/sessions/{id}/expire",
        server.api_extra(CheckoutSession._api_expire, "/v1/checkout/sessions/{id}/expire"),
    )
    router.add_get(
        "/v1/checkout/sessions/{id}/line_items",
        server.api_extra(
            CheckoutSession._api_list_line_items,
            "/v1/checkout/sessions/{id}/line_items",
        ),
    )
    router.add_get(
        "/v1/products/{id}/features",
        server.api_extra(_product_features, "/v1/products/{id}/features"),
    )
    # Stripe's path for balance transactions (localstripe only has /v1/balance/history/{id}).
    router.add_get(
        "/v1/balance_transactions/{id}",
        server.api_retrieve(ls.BalanceTransaction, "/v1/balance_transactions/{id}"),
    )
    router.add_get(r"/_dev/return/{outcome:success|cancel}", _return_page)
    router.add_get("/_dev/checkout/{id}", _checkout_page)
    router.add_post("/_dev/checkout/{id}/complete", _complete_checkout)
    router.add_delete("/_config/webhooks/{id}", _unregister_webhook)
    from devtools import standin_meters  # Billing Meters, in their own module

    standin_meters.install(router, sys.modules[__name__])
    from devtools import standin_clock  # renewals, invoice pay/void/uncollectible (its own module)

    standin_clock.install(app, globals())


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # same plain-function routes
    _install()


# --- 7. Serving ---------------------------------------------------------------------------------
async def start(host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve the app on host:port (0 = a free port); returns the runner and the base URL."""
    if host in WILDCARD_HOSTS:
        raise ValueError("the stand-in binds one interface only, not all of them")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}"


def _persist_to(path: str) -> None:
    """Keep the stand-in's objects across restarts of `make run`, like Stripe keeps them: our
    database still names its customers, prices and subscriptions after a restart."""

    def dump(store: Any) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    ls.Store.dump_to_disk = dump
    try:
        with open(path, "rb") as f:
            dict.update(ls.store, pickle.load(f))  # noqa: S301 - our own dev file
    except FileNotFoundError:
        pass
    except Exception:  # a file from another localstripe version: start empty
        logger.warning("ignoring unreadable stand-in state %s", path, exc_info=True)


async def _serve_forever(host: str, port: int, state_file: str | None) -> None:
    runner, url = await start(host, port)
    kept = f"state kept in {state_file}" if state_file else "in-memory state"
    logger.info("Stripe stand-in listening on %s (dev only, %s)", url, kept)
    try:
        await asyncio.Event().wait()
    finally:
        if state_file:  # objects changed in place (statuses) are saved on the way out too
            ls.store.dump_to_disk()
        await runner.cleanup()


def _stop(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Dev-only Stripe stand-in (localstripe).")
    parser.add_argument("--host", default="127.0.0.1", help="one interface, never 0.0.0.0 or ::")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--webhook-url", help="where to POST signed events")
    parser.add_argument("--webhook-secret", help="whsec_... used to sign them")
    parser.add_argument(
        "--public-url", help="base URL of checkout pages (default: the Host the API was called on)"
    )
    parser.add_argument("--state-file", help="keep objects across restarts in this file (pickle)")
    args = parser.parse_args(argv)
    if args.host in WILDCARD_HOSTS:
        parser.error("--host must name one interface (e.g. 127.0.0.1), not all of them")
    if bool(args.webhook_url) != bool(args.webhook_secret):
        parser.error("--webhook-url and --webhook-secret go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.webhook_url:
        register_webhook("cli", args.webhook_url, args.webhook_secret, None)
    if args.public_url:
        app[PUBLIC_URL] = args.public_url.rstrip("/")
    if args.state_file:
        _persist_to(args.state_file)
    # honcho stops its processes with SIGTERM: end the loop cleanly so the state is saved.
    signal.signal(signal.SIGTERM, _stop)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop it
        asyncio.run(_serve_forever(args.host, args.port, args.state_file))


if __name__ == "__main__":
    main()
