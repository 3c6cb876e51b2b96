"""Staff console for families: members join and leave through the family services; a member staff
add here skips the invitation (support cases) and is audited."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from payments_project.accounts.links import customer_link
from payments_project.errors import DomainError
from subscriptions.families.models import Family, FamilyMember
from subscriptions.families.services import family_member_add_by_staff, family_member_remove


class FamilyMemberInline(admin.TabularInline):
    model = FamilyMember
    extra = 0
    raw_id_fields = ["user"]
    readonly_fields = ["joined_at"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a member is added or removed, never re-pointed to another user


@admin.register(Family)
class FamilyAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "owner_page", "created_at"]
    search_fields = ["name", "owner__username", "owner__email"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    readonly_fields = ["owner_page"]
    inlines = [FamilyMemberInline]

    @admin.display(description="owner", ordering="owner")
    def owner_page(self, obj: Family) -> str:
        return customer_link(obj.owner_id, obj.owner)

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
                self._run(
                    request,
                    lambda u=user: family_member_add_by_staff(family=family, user=u, staff_user=request.user),
                )

    def _run(self, request: HttpRequest, action: Any) -> None:
        try:
            action()
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
