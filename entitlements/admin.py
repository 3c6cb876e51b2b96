"""Staff console: entitlements (suspend/revoke through the services) and families."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from entitlements.models import Entitlement, Family, FamilyMember
from entitlements.services import entitlement_set_status, family_member_add, family_member_remove
from payments_project.errors import DomainError


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
        count = entitlement_set_status(entitlements=queryset, status=Entitlement.Status.SUSPENDED)
        self.message_user(request, f"{count} entitlement(s) suspended.", messages.SUCCESS)

    @admin.action(description="Revoke selected entitlements", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Entitlement]) -> None:
        count = entitlement_set_status(entitlements=queryset, status=Entitlement.Status.REVOKED)
        self.message_user(request, f"{count} entitlement(s) revoked.", messages.SUCCESS)


class FamilyMemberInline(admin.TabularInline):
    model = FamilyMember
    extra = 0
    raw_id_fields = ["user"]
    readonly_fields = ["joined_at"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a member is added or removed, never re-pointed to another user


@admin.register(Family)
class FamilyAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "owner", "created_at"]
    search_fields = ["name", "owner__username", "owner__email"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    inlines = [FamilyMemberInline]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Members join and leave through the services: the plan's member limit and the owner rule
        apply in the admin too, and the members' cached entitlements follow at once."""
        if formset.model is not FamilyMember:
            super().save_formset(request, form, formset, change)
            return
        family = form.instance
        # What the admin's change message reads after a save: the services did the writes.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for removed in formset.deleted_forms:
            if removed.instance.pk:
                self._run(
                    request, lambda m=removed.instance: family_member_remove(family=family, user=m.user)
                )
        for added in formset.extra_forms:
            if added.has_changed() and added not in formset.deleted_forms:
                user = added.cleaned_data["user"]
                self._run(request, lambda u=user: family_member_add(family=family, user=u))

    def _run(self, request: HttpRequest, action: Any) -> None:
        try:
            action()
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
