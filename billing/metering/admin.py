"""Staff console for metered billing: what we reported to Stripe per window, the Stripe meters we
use, and the reconciliations (the newest first, with their lines)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.metering.models import MeterReconciliation, MeterReconciliationLine, MeterReport, StripeMeter
from billing.metering.services import meter_reports_send_now
from billing.stripe.gateway import StripeUnavailable


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the services only: staff read them, never type or delete them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdmin):
    list_display = [
        "event_name",
        "stripe_customer_id",
        "window_start",
        "window_end",
        "value",
        "status",
        "attempts",
        "already_existed",
        "identifier",
        "sent_at",
    ]
    list_filter = ["status", "event_name", "already_existed"]
    search_fields = ["=stripe_customer_id", "=identifier", "=subscription_stripe_id", "event_name"]
    date_hierarchy = "window_start"
    actions = ["send_now"]

    @admin.action(description="Send the selected pending reports to Stripe now", permissions=["send"])
    def send_now(self, request: HttpRequest, queryset: QuerySet[MeterReport]) -> None:
        ids = list(queryset.filter(status=MeterReport.Status.PENDING).values_list("pk", flat=True))
        try:
            sent = meter_reports_send_now(report_ids=ids, actor=request.user)
        except StripeUnavailable as exc:
            self.message_user(request, f"Stripe is unavailable: {exc.message}", messages.ERROR)
            return
        self.message_user(request, f"{sent} of {len(ids)} pending reports sent.", messages.SUCCESS)

    def has_send_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.send_meterreport")


@admin.register(StripeMeter)
class StripeMeterAdmin(ReadOnlyAdmin):
    list_display = ["event_name", "stripe_meter_id", "created_at"]
    search_fields = ["event_name", "=stripe_meter_id"]


class MeterReconciliationLineInline(admin.TabularInline):
    model = MeterReconciliationLine
    fields = ["event_name", "stripe_customer_id", "ours", "stripe", "difference"]
    readonly_fields = ["event_name", "stripe_customer_id", "ours", "stripe", "difference"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[MeterReconciliationLine]:
        # Differences first: what staff open the page for.
        return super().get_queryset(request).order_by("difference", "event_name", "stripe_customer_id")


@admin.register(MeterReconciliation)
class MeterReconciliationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "start", "end", "lines_count", "differences"]
    readonly_fields = ["start", "end", "lines_count", "differences", "created_at"]
    inlines = [MeterReconciliationLineInline]
    search_fields = ["=lines__stripe_customer_id"]
