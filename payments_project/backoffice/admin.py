"""Customers in the staff console: the list the global search box lands on, and one page per user
with everything about them (profile, subscriptions, payments, entitlements, family, usage, dunning,
Stripe events, staff actions). Read-only for every role; actions stay on each object's own page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from billing.models import Payment
from payments_project.accounts.links import customer_url
from payments_project.accounts.models import Customer
from payments_project.backoffice.selectors import (
    customer_entitlement_check,
    customer_found,
    customer_overview,
    customer_search_filter,
)
from payments_project.ids import int_id
from subscriptions.transitions import GIVES_ACCESS


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["id", "username", "email", "full_name", "date_joined", "last_login"]
    search_fields = ["username"]  # shows the search box; the search itself is customer_search_filter
    search_help_text = "Email, name, user id, or a Stripe id: cus_, sub_, pi_, ch_, in_, evt_."
    fields = ("username", "email", "first_name", "last_name", "date_joined", "last_login")
    readonly_fields = fields
    ordering = ["-date_joined", "-pk"]
    show_full_result_count = False

    @admin.display(description="name")
    def full_name(self, obj: Customer) -> str:
        return obj.get_full_name() or "-"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        condition = customer_search_filter(search_term)
        return (queryset if condition is None else queryset.filter(condition)), False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """A search naming exactly one customer opens their page at once."""
        query = request.GET.get("q", "").strip()
        if query and self.has_view_permission(request) and set(request.GET) == {"q"}:
            found = customer_found(query=query)
            if found is not None:
                return HttpResponseRedirect(customer_url(found))
        return super().changelist_view(request, extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The customer page (read-only for everyone who may view customers)."""
        user_id = int_id(object_id)
        if user_id is None:
            raise Http404("No such customer.")
        if not self.has_view_permission(request):
            raise PermissionDenied
        overview = customer_overview(user_id=user_id)
        if overview is None:
            raise Http404("No such customer.")
        feature = request.GET.get("feature", "").strip()
        if feature:
            overview.check = customer_entitlement_check(user_id=overview.user.pk, feature=feature)
        user = request.user
        context = {
            **self.admin_site.each_context(request),
            "title": overview.user.get_full_name() or overview.user.get_username(),
            "subtitle": "Customer",
            "opts": self.model._meta,
            "has_view_permission": True,
            "o": overview,
            "customer": overview.user,
            "feature": feature,
            "gives_access": GIVES_ACCESS,
            "can_refund": user.has_perm("billing.refund_payment"),
            "can_change_subscriptions": user.has_perm("subscriptions.change_subscription"),
            "succeeded": Payment.Status.SUCCEEDED,
            "links": {
                name: f"{reverse(f'admin:{changelist}_changelist')}?{lookup}={object_id}"
                for name, changelist, lookup in [
                    ("payments", "billing_payment", "user__id__exact"),
                    ("subscriptions", "subscriptions_subscription", "user__id__exact"),
                    ("entitlements", "entitlements_entitlement", "user__id__exact"),
                    ("audit", "accounts_auditlogentry", "subject_user__id__exact"),
                    ("usage_records", "usage_usagerecord", "user__id__exact"),
                    ("dunning", "subscriptions_dunningcase", "subscription__user__id__exact"),
                ]
            },
        }
        subjects = ",".join(overview.facts["usage_subjects"])
        context["links"]["usage_counters"] = (
            f"{reverse('admin:usage_usagecounter_changelist')}?subject__in={subjects}"
        )
        return TemplateResponse(request, "admin/backoffice/customer.html", context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # customers sign up through the product

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
