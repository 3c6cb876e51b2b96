"""Staff console for the inbound Stripe event inbox (and, in mirror_admin, dj-stripe's mirror).

An event's page answers what staff ask of it: what happened, to whom and to which object, did we
process it, why not, when will it be tried again; finance may send it through again.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from billing.models import StripeEvent
from billing.stripe.mirror_admin import mirror_register, pretty_json
from billing.stripe.selectors import stripe_event_customer_user_id, stripe_event_next_attempt
from billing.stripe.services import MAX_RETRIES, stripe_event_reprocess
from payments_project.accounts.links import customer_url

mirror_register(admin.site)

# Where an object id leads: our own page (found by its Stripe id) and dj-stripe's mirror of it.
_OBJECT_PAGES = {
    "sub": ("admin:subscriptions_subscription_changelist", "admin:djstripe_subscription_changelist"),
    "pi": ("admin:billing_payment_changelist", "admin:djstripe_paymentintent_changelist"),
    "ch": ("admin:billing_payment_changelist", "admin:djstripe_charge_changelist"),
    "in": ("admin:billing_payment_changelist", "admin:djstripe_invoice_changelist"),
    "re": ("admin:billing_refund_changelist", "admin:djstripe_refund_changelist"),
    "cus": ("admin:accounts_customer_changelist", "admin:djstripe_customer_changelist"),
}
REPROCESSABLE = {StripeEvent.Status.FAILED, StripeEvent.Status.DEAD, StripeEvent.Status.PENDING}


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = [
        "stripe_event_id",
        "type",
        "status",
        "attempts",
        "deliveries",
        "stripe_customer_id",
        "received_at",
        "processed_at",
    ]
    list_filter = ["status", "type", "livemode"]
    search_fields = ["=stripe_event_id", "type", "=object_id", "=stripe_customer_id"]
    change_form_template = "admin/billing/stripeevent/change_form.html"
    actions = ["reprocess"]

    @admin.action(description="Reprocess the selected events", permissions=["reprocess"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        count = stripe_event_reprocess(
            stripe_event_pks=list(queryset.values_list("pk", flat=True)), actor=request.user
        )
        self.message_user(request, f"{count} events queued again (done events are left alone).")

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_stripeevent")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the inbox is the record of what Stripe told us

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:pk>/reprocess/",
                self.admin_site.admin_view(self.reprocess_view),
                name="billing_stripeevent_reprocess",
            ),
            *super().get_urls(),
        ]

    def reprocess_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The event page's Reprocess button (finance): queue it again, audited."""
        row = get_object_or_404(StripeEvent, pk=pk)
        if not self.has_reprocess_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if stripe_event_reprocess(stripe_event_pks=[row.pk], actor=request.user):
            self.message_user(request, "Queued again: it is processed in a moment.", messages.SUCCESS)
        else:
            self.message_user(request, f"Nothing to do: the event is {row.status}.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:billing_stripeevent_change", args=[row.pk]))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        row = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if row is not None:
            context.update(self._event_context(request, row))
        return super().change_view(request, object_id, form_url, context)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return []  # the template shows the event; no form fields

    def _event_context(self, request: HttpRequest, row: StripeEvent) -> dict[str, Any]:
        body = row.trigger.json_body if row.trigger_id and row.trigger else {}
        # last_error is "<Type>: <message>\n\n<traceback>"; a message may hold blank lines itself.
        error, marker, rest = row.last_error.partition("\n\nTraceback (most recent call last):")
        trace = f"{marker.strip()}{rest}" if marker else ""
        user_id = stripe_event_customer_user_id(row=row)
        prefix = row.object_id.split("_", 1)[0] if row.object_id else ""
        pages = _OBJECT_PAGES.get(prefix)
        return {
            "event": row,
            "payload": pretty_json(body, summary="Show the payload as Stripe sent it") if body else "",
            "error_line": error,
            "traceback": trace,
            "next_attempt": stripe_event_next_attempt(row=row),
            "max_attempts": MAX_RETRIES + 1,
            "customer_url": customer_url(user_id) if user_id else "",
            "object_url": f"{reverse(pages[0])}?q={row.object_id}" if pages else "",
            "mirror_url": f"{reverse(pages[1])}?q={row.object_id}" if pages else "",
            "can_reprocess": self.has_reprocess_permission(request) and row.status in REPROCESSABLE,
        }
