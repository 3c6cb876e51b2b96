"""Staff console for the inbound Stripe event inbox."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.models import (
    StripeEvent,
)
from billing.stripe.services import stripe_event_reprocess


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = [
        "stripe_event_id",
        "type",
        "status",
        "attempts",
        "deliveries",
        "received_at",
        "processed_at",
    ]
    list_filter = ["status", "type", "livemode"]
    search_fields = ["stripe_event_id", "type"]
    readonly_fields = [
        "stripe_event_id",
        "type",
        "livemode",
        "stripe_created",
        "status",
        "attempts",
        "deliveries",
        "trigger",
        "received_at",
        "started_at",
        "processed_at",
        "last_error",
    ]
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
