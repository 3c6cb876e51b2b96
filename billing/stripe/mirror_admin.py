"""dj-stripe's mirror of Stripe in the staff console: only what staff need, read-only.

dj-stripe registers about forty admin pages, several of which answer 500 (Customers, Accounts,
Invoices; Promotion codes and Sessions when searched) and show amounts wrongly (a ¥14,800 charge
as "148.00 JPY": its decimal fields divide every currency by 100). We take its pages off the
site and register our own for the objects staff look at: amounts are read from the object as
Stripe sent it (`stripe_data`, in Stripe's minor units) and formatted in the currency's own way.
Our own tables (payments, refunds, subscriptions, events) stay the place where staff act.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django.utils.html import format_html
from djstripe import models as djstripe_models

from billing.money import format_money, is_currency
from payments_project.accounts.links import customer_link


def stripe_money(data: dict[str, Any] | None, key: str) -> str:
    """An amount of a Stripe object (minor units, lowercase currency) as '€8.99', else '-'."""
    data = data or {}
    amount, currency = data.get(key), str(data.get("currency") or "").upper()
    if not isinstance(amount, int) or not is_currency(currency):
        return "-"
    return format_money(amount, currency)


def pretty_json(value: Any, summary: str = "Show as Stripe sent it") -> str:
    """A folded, indented JSON block for a change page."""
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return format_html('<details class="bo-json"><summary>{}</summary><pre>{}</pre></details>', summary, text)


class StripeMirrorAdmin(admin.ModelAdmin):
    """Read-only for everyone: rows come from Stripe, never from the console."""

    list_per_page = 50
    search_fields = ["=id"]
    date_hierarchy = None
    show_full_result_count = False  # COUNT(*) over a large mirror on every page is not worth it
    base_fields: list[str] = ["id", "livemode", "created"]
    extra_fields: list[str] = []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return [*self.base_fields, *self.extra_fields, "as_sent"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.get_fields(request, obj)

    @admin.display(description="object")
    def as_sent(self, obj: Any) -> str:
        return pretty_json(getattr(obj, "stripe_data", None) or {})

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _data(obj: Any) -> dict[str, Any]:
    return dict(getattr(obj, "stripe_data", None) or {})


def _customer_of(obj: Any) -> str:
    customer = getattr(obj, "customer", None)
    if customer is None:
        return "-"
    return customer_link(customer.subscriber_id, customer.email or customer.id)


class CustomerMirrorAdmin(StripeMirrorAdmin):
    list_display = ["id", "email", "name", "our_customer", "created", "livemode"]
    search_fields = ["=id", "email", "subscriber__username", "subscriber__email"]
    list_select_related = ["subscriber"]
    extra_fields = ["email", "name", "our_customer"]

    @admin.display(description="name")
    def name(self, obj: Any) -> str:
        return str(_data(obj).get("name") or "-")

    @admin.display(description="our customer")
    def our_customer(self, obj: Any) -> str:
        return customer_link(obj.subscriber_id, obj.subscriber.get_username() if obj.subscriber else "")


class _WithCustomer(StripeMirrorAdmin):
    search_fields = ["=id", "=customer__id", "customer__email"]
    list_select_related = ["customer"]

    @admin.display(description="customer")
    def customer_column(self, obj: Any) -> str:
        return _customer_of(obj)


class SubscriptionMirrorAdmin(_WithCustomer):
    list_display = ["id", "customer_column", "status", "amount", "created", "livemode"]
    extra_fields = ["customer_column", "status", "amount"]

    @admin.display(description="status")
    def status(self, obj: Any) -> str:
        return str(_data(obj).get("status") or "-")

    @admin.display(description="amount per period")
    def amount(self, obj: Any) -> str:
        items = (_data(obj).get("items") or {}).get("data") or []
        price = (items[0].get("price") or items[0].get("plan") or {}) if items else {}
        if not isinstance(price, dict):
            return "-"
        return stripe_money(
            {"amount": price.get("unit_amount", price.get("amount")), "currency": price.get("currency")},
            "amount",
        )


class InvoiceMirrorAdmin(_WithCustomer):
    list_display = ["id", "number", "customer_column", "status", "total", "paid", "created", "livemode"]
    extra_fields = ["number", "customer_column", "subscription_id", "status", "total", "paid"]

    @admin.display(description="number")
    def number(self, obj: Any) -> str:
        return str(_data(obj).get("number") or "-")

    @admin.display(description="status")
    def status(self, obj: Any) -> str:
        return str(_data(obj).get("status") or "-")

    @admin.display(description="total")
    def total(self, obj: Any) -> str:
        return stripe_money(_data(obj), "total")

    @admin.display(description="paid")
    def paid(self, obj: Any) -> str:
        return stripe_money(_data(obj), "amount_paid")


class ChargeMirrorAdmin(_WithCustomer):
    list_display = ["id", "customer_column", "amount", "refunded", "status", "created", "livemode"]
    extra_fields = ["customer_column", "amount", "refunded", "status", "invoice_id", "payment_intent_id"]

    @admin.display(description="amount")
    def amount(self, obj: Any) -> str:
        return stripe_money(_data(obj), "amount")

    @admin.display(description="refunded")
    def refunded(self, obj: Any) -> str:
        return stripe_money(_data(obj), "amount_refunded") if _data(obj).get("amount_refunded") else "-"

    @admin.display(description="status")
    def status(self, obj: Any) -> str:
        return str(_data(obj).get("status") or "-")


class PaymentIntentMirrorAdmin(_WithCustomer):
    list_display = ["id", "customer_column", "amount", "status", "created", "livemode"]
    extra_fields = ["customer_column", "amount", "status"]

    @admin.display(description="amount")
    def amount(self, obj: Any) -> str:
        return stripe_money(_data(obj), "amount")

    @admin.display(description="status")
    def status(self, obj: Any) -> str:
        return str(_data(obj).get("status") or "-")


class RefundMirrorAdmin(StripeMirrorAdmin):
    list_display = ["id", "charge_id", "amount", "status", "reason", "created", "livemode"]
    search_fields = ["=id", "=charge__id"]
    extra_fields = ["charge_id", "amount", "status", "reason"]

    @admin.display(description="amount")
    def amount(self, obj: Any) -> str:
        return stripe_money(_data(obj), "amount")

    @admin.display(description="status")
    def status(self, obj: Any) -> str:
        return str(_data(obj).get("status") or "-")

    @admin.display(description="reason")
    def reason(self, obj: Any) -> str:
        return str(_data(obj).get("reason") or "-")


class EventMirrorAdmin(StripeMirrorAdmin):
    list_display = ["id", "type", "created", "livemode"]
    list_filter = ["type"]
    search_fields = ["=id", "type"]
    extra_fields = ["type", "api_version"]


class WebhookEventTriggerMirrorAdmin(StripeMirrorAdmin):
    """Every delivery to our endpoint, valid or not (a bad signature is kept here, and only here)."""

    list_display = ["id", "created", "valid", "processed", "event_id", "exception", "remote_ip"]
    list_filter = ["valid", "processed"]
    search_fields = ["=id", "=event__id", "exception"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return ["id", "created", "remote_ip", "valid", "processed", "event_id", "exception", "body_json"]

    @admin.display(description="body")
    def body_json(self, obj: Any) -> str:
        try:
            return pretty_json(json.loads(obj.body or "{}"), summary="Show the body as received")
        except ValueError:
            return format_html("<pre>{}</pre>", obj.body[:20000])


MIRRORED: dict[type[Model], type[StripeMirrorAdmin]] = {
    djstripe_models.Customer: CustomerMirrorAdmin,
    djstripe_models.Subscription: SubscriptionMirrorAdmin,
    djstripe_models.Invoice: InvoiceMirrorAdmin,
    djstripe_models.Charge: ChargeMirrorAdmin,
    djstripe_models.PaymentIntent: PaymentIntentMirrorAdmin,
    djstripe_models.Refund: RefundMirrorAdmin,
    djstripe_models.Event: EventMirrorAdmin,
    djstripe_models.WebhookEventTrigger: WebhookEventTriggerMirrorAdmin,
}


def mirror_register(site: admin.AdminSite) -> None:
    """Replace dj-stripe's own pages with the mirror's."""
    import djstripe.admin  # noqa: F401 - its pages must be registered before they are taken off

    for model in list(site._registry):
        if model._meta.app_label == "djstripe":
            site.unregister(model)
    for model, model_admin in MIRRORED.items():
        site.register(model, model_admin)
