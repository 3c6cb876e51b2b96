"""Staff console for payments and refunds (refunds are finance only)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing.forms import MoneyField, money_clean
from billing.models import (
    Payment,
    PaymentStatusChange,
    Refund,
)
from billing.money import format_money
from billing.payments.services import refund_create
from payments_project.accounts.links import customer_link
from payments_project.errors import DomainError


class RefundForm(forms.Form):
    amount = MoneyField(
        required=False,
        min_minor=1,
        help_text="In real units of the payment's currency (e.g. 7.50). Empty refunds everything left.",
    )
    reason = forms.ChoiceField(choices=Refund.Reason.choices)
    note = forms.CharField(required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2}))
    revoke_entitlements = forms.BooleanField(
        required=False, help_text="Also take back the features this payment granted."
    )

    def __init__(self, *args: Any, payment: Payment, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.payment = payment
        self.fields["amount"].set_currency(payment.currency)  # type: ignore[attr-defined]
        if payment.kind == Payment.Kind.SUBSCRIPTION:
            # Access given by a subscription is taken back by cancelling it, not by a refund.
            del self.fields["revoke_entitlements"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        money_clean(self, "amount", self.payment.currency)
        return cleaned

    def amount_minor(self) -> int | None:
        amount = self.cleaned_data.get("amount")
        return int(amount) if amount is not None else None

    def revoke(self) -> bool:
        return bool(self.cleaned_data.get("revoke_entitlements", False))


class PaymentStatusChangeInline(admin.TabularInline):
    model = PaymentStatusChange
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "from_status", "to_status", "staff_user", "reason")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RefundInline(admin.TabularInline):
    model = Refund
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "created_at",
        "money",
        "reason",
        "status",
        "created_by",
        "note",
        "stripe_refund_id",
    )

    @admin.display(description="amount")
    def money(self, obj: Refund) -> str:
        return format_money(obj.amount, obj.currency)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["id", "customer", "kind", "money", "refunds", "left", "status", "created_at"]
    list_filter = ["kind", "status", "currency", ("created_at", admin.DateFieldListFilter)]
    search_fields = [
        "=id",
        "user__username",
        "user__email",
        "order_id",
        "=stripe_payment_intent_id",
        "=stripe_charge_id",
        "=stripe_invoice_id",
        "=stripe_subscription_id",
        "=stripe_customer_id",
    ]
    list_select_related = ["user"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "customer",
        "kind",
        "money",
        "refunds",
        "left",
        "status",
        "description",
        "order_id",
        "metadata",
        "plan",
        "subscription",
        "stripe_payment_intent_id",
        "stripe_charge_id",
        "stripe_invoice_id",
        "stripe_customer_id",
        "failure_code",
        "failure_message",
        "idempotency_key",
        "created_at",
        "updated_at",
        "refund_link",
    ]
    exclude = ["user", "amount", "currency", "amount_refunded", "client_secret", "stripe_subscription_id"]
    inlines = [RefundInline, PaymentStatusChangeInline]
    actions = ["refund_selected"]

    @admin.display(description="amount", ordering="amount")
    def money(self, obj: Payment) -> str:
        return obj.display_amount

    @admin.display(description="customer", ordering="user")
    def customer(self, obj: Payment) -> str:
        return customer_link(obj.user_id, obj.user)

    @admin.display(description="subscription")
    def subscription(self, obj: Payment) -> str:
        if not obj.stripe_subscription_id:
            return "-"
        # Found by its Stripe id: billing does not import the subscriptions app.
        url = reverse("admin:subscriptions_subscription_changelist")
        return format_html(
            '<a href="{}?q={}">{}</a>', url, obj.stripe_subscription_id, obj.stripe_subscription_id
        )

    @admin.display(description="refunds")
    def refunds(self, obj: Payment) -> str:
        return obj.refund_state

    @admin.display(description="left to refund")
    def left(self, obj: Payment) -> str:
        return obj.display_left_to_refund if obj.status == Payment.Status.SUCCEEDED else "-"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if not self.has_refund_permission(request):
            fields.remove("refund_link")  # support sees no Refund button it could not use
        return fields

    @admin.display(description="refund")
    def refund_link(self, obj: Payment) -> str:
        if obj.status != Payment.Status.SUCCEEDED or not obj.refundable_amount:
            return "nothing to refund"
        url = reverse("admin:billing_payment_refund", args=[obj.pk])
        return format_html('<a class="button" href="{}">Refund…</a>', url)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # payments come from the API and Stripe, never typed by hand

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:payment_id>/refund/",
                self.admin_site.admin_view(self.refund_view),
                name="billing_payment_refund",
            ),
            *super().get_urls(),
        ]

    @admin.action(description="Refund the selected payment…", permissions=["refund"])
    def refund_selected(self, request: HttpRequest, queryset: QuerySet[Payment]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one payment to refund.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:billing_payment_refund", args=[queryset.get().pk]))

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.refund_payment")

    def refund_view(self, request: HttpRequest, payment_id: int) -> HttpResponse:
        payment = get_object_or_404(Payment, pk=payment_id)
        if not self.has_refund_permission(request):
            raise PermissionDenied
        form = RefundForm(request.POST or None, payment=payment)
        if request.method == "POST" and form.is_valid():
            try:
                refund = refund_create(
                    payment_id=payment.pk,
                    amount=form.amount_minor(),
                    reason=form.cleaned_data["reason"],
                    note=form.cleaned_data["note"],
                    staff_user=request.user,
                    revoke_entitlements=form.revoke(),
                )
            except DomainError as exc:
                form.add_error("amount" if exc.code == "over_refund" else None, exc.message)
            else:
                self.message_user(
                    request, f"Refunded {format_money(refund.amount, refund.currency)}.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:billing_payment_change", args=[payment.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Refund payment {payment.pk}",
            "payment": payment,
            "refundable": format_money(payment.refundable_amount, payment.currency),
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/billing/payment/refund.html", context)


@admin.register(Refund)
class RefundAdmin(admin.ModelAdmin):
    list_display = ["id", "payment", "money", "reason", "status", "created_by", "created_at"]
    list_filter = ["status", "reason", "currency"]
    search_fields = ["=payment__id", "stripe_refund_id", "payment__user__username"]
    list_select_related = ["payment", "created_by"]

    @admin.display(description="amount", ordering="amount")
    def money(self, obj: Refund) -> str:
        return format_money(obj.amount, obj.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # refunds are made from a payment's page

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
