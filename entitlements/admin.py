"""Staff console: entitlements (suspend/revoke through the services) and families."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from entitlements.models import Entitlement
from entitlements.services import entitlement_set_status


@admin.register(Entitlement)
class EntitlementAdmin(admin.ModelAdmin):
    list_display = ["id", "feature", "user", "family", "plan", "source", "status", "expires_at"]
    list_filter = ["status", "source", "feature"]
    search_fields = ["user__username", "user__email", "feature__code", "source_ref"]
    list_select_related = ["feature", "user", "family", "plan"]
    raw_id_fields = ["user", "family", "subscription"]
    readonly_fields = ["created_at", "updated_at"]
    actions = ["suspend_selected", "revoke_selected"]

    @admin.action(description="Suspend selected entitlements", permissions=["change"])
    def suspend_selected(self, request: HttpRequest, queryset: QuerySet[Entitlement]) -> None:
        count = entitlement_set_status(
            entitlements=queryset, status=Entitlement.Status.SUSPENDED, actor=request.user
        )
        self.message_user(request, f"{count} entitlement(s) suspended.", messages.SUCCESS)

    @admin.action(description="Revoke selected entitlements", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Entitlement]) -> None:
        count = entitlement_set_status(
            entitlements=queryset, status=Entitlement.Status.REVOKED, actor=request.user
        )
        self.message_user(request, f"{count} entitlement(s) revoked.", messages.SUCCESS)
