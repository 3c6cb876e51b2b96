"""Staff console: entitlements (suspend/revoke through the services) and families."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from entitlements.models import Entitlement
from entitlements.services import entitlement_set_status
from payments_project.accounts.links import customer_link


@admin.register(Entitlement)
class EntitlementAdmin(admin.ModelAdmin):
    list_display = ["id", "feature", "customer", "family", "plan", "source", "status", "expires_at"]
    list_filter = ["status", "source", "feature"]
    search_fields = ["user__username", "user__email", "feature__code", "source_ref"]
    list_select_related = ["feature", "user", "family", "plan"]
    raw_id_fields = ["user", "family", "subscription"]
    readonly_fields = ["customer", "created_at", "updated_at"]
    actions = ["suspend_selected", "revoke_selected"]

    @admin.display(description="customer", ordering="user")
    def customer(self, obj: Entitlement) -> str:
        return customer_link(obj.user_id, obj.user) if obj.user_id else "-"

    def has_delete_permission(self, request: HttpRequest, obj: Entitlement | None = None) -> bool:
        return False  # access is taken back by suspending or revoking (audited), never by deleting

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
