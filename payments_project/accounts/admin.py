"""The audit log in the staff console: read-only for everyone, superusers included."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from payments_project.accounts.links import customer_link
from payments_project.accounts.models import AuditLogEntry
from payments_project.accounts.otp import StaffAuthenticationForm

# The staff console's login asks for a one-time code too (required for finance and superusers in
# production): payments_project/accounts/otp.py.
admin.site.login_form = StaffAuthenticationForm


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "target_type", "target_id", "customer", "reason"]
    list_filter = ["action", "target_type"]
    search_fields = [
        "target_id",
        "reason",
        "actor__username",
        "subject_user__username",
        "subject_user__email",
    ]
    list_select_related = ["actor", "subject_user"]
    date_hierarchy = "created_at"

    @admin.display(description="customer", ordering="subject_user")
    def customer(self, obj: AuditLogEntry) -> str:
        return customer_link(obj.subject_user_id, obj.subject_user) if obj.subject_user_id else "-"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
