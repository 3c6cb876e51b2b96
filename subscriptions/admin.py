"""Staff console: subscriptions with their status timeline; actions go through the services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html_join

from billing.money import format_money, is_currency
from payments_project.accounts.links import customer_link, customer_url
from payments_project.errors import DomainError
from subscriptions import services
from subscriptions.dunning import admin as dunning_admin  # noqa: F401 - registers the dunning pages
from subscriptions.families import admin as families_admin  # noqa: F401 - registers the family pages
from subscriptions.models import Subscription, SubscriptionHistory, SubscriptionStripeCall

GOODWILL_DAYS = 7
TIMELINE = ["created_at", "from_status", "to_status", "cause", "staff_user", "stripe_event_id", "note"]


class HistoryInline(admin.TabularInline):
    model = SubscriptionHistory
    extra = 0
    can_delete = False
    ordering = ["created_at", "pk"]
    fields = tuple(TIMELINE)
    readonly_fields = TIMELINE

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "user",
        "plan",
        "price",
        "status",
        "current_period_end",
        "cancel_at_period_end",
        "stripe_subscription_id",
    ]
    list_filter = ["status", "plan", "cancel_at_period_end"]
    search_fields = ["user__username", "user__email", "stripe_subscription_id"]
    list_select_related = ["user", "plan"]
    raw_id_fields = ["user", "family"]
    inlines = [HistoryInline]
    actions = [
        "cancel_at_period_end_action",
        "cancel_now_action",
        "resume_action",
        "extend_action",
        "sync_metered_items_action",
    ]

    change_form_template = "admin/subscriptions/subscription/change_form.html"

    def has_change_permission(self, request: HttpRequest, obj: Subscription | None = None) -> bool:
        """Every field mirrors Stripe, so a subscription's page is read-only (no Save button) for
        everyone; finance acts through the actions (the list's, or the page's buttons)."""
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Subscription | None = None) -> bool:
        return False  # a subscription ends by cancelling it at Stripe, never by deleting our row

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        actions = self.get_actions(request)
        buttons = [(name, action[2]) for name, action in actions.items() if action]
        context = {**(extra_context or {}), "subscription_actions": buttons}
        return super().change_view(request, object_id, form_url, context)

    def get_fields(self, request: HttpRequest, obj: Subscription | None = None) -> list[Any]:
        hidden = ("id", "amount", "currency")  # shown together as the price
        shown = [f.name for f in Subscription._meta.concrete_fields if f.name not in hidden]
        # The user as a link to their customer page, which every staff role may open.
        shown[shown.index("user")] = "customer"
        return [*shown[:3], "price", *shown[3:], "related"]

    @admin.display(description="customer")
    def customer(self, obj: Subscription) -> str:
        return customer_link(obj.user_id, obj.user)

    def get_readonly_fields(self, request: HttpRequest, obj: Subscription | None = None) -> list[str]:
        # Status and periods mirror Stripe: they change through the services only.
        return self.get_fields(request, obj)

    @admin.display(description="price")
    def price(self, obj: Subscription) -> str:
        """The price locked at signup, in the currency's own format (€8.99 a month)."""
        if obj.amount is None or not is_currency(obj.currency):
            return "-"
        interval = {"month": " a month", "year": " a year"}.get(obj.plan.interval, "")
        return format_money(obj.amount, obj.currency) + interval

    @admin.display(description="related")
    def related(self, obj: Subscription) -> str:
        links = [
            (customer_url(obj.user_id), "customer"),
            (f"{reverse('admin:billing_payment_changelist')}?user__id__exact={obj.user_id}", "payments"),
            (
                f"{reverse('admin:entitlements_entitlement_changelist')}?subscription__id__exact={obj.pk}",
                "entitlements",
            ),
        ]
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[Subscription],
        run: Callable[[Subscription], object],
        done: str,
    ) -> None:
        ok = 0
        for subscription in queryset:
            try:
                run(subscription)
                ok += 1
            except DomainError as exc:
                self.message_user(request, f"#{subscription.pk}: {exc.message}", messages.ERROR)
        if ok:
            self.message_user(request, f"{done}: {ok} subscription(s).", messages.SUCCESS)

    @admin.action(description="Cancel at period end", permissions=["change"])
    def cancel_at_period_end_action(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        self._each(
            request,
            queryset,
            lambda s: services.subscription_cancel(subscription=s, actor=request.user),
            "Cancellation at period end requested",
        )

    @admin.action(description="Cancel immediately", permissions=["change"])
    def cancel_now_action(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        self._each(
            request,
            queryset,
            lambda s: services.subscription_cancel(subscription=s, actor=request.user, immediately=True),
            "Cancelled",
        )

    @admin.action(description="Resume (undo pending cancellation)", permissions=["change"])
    def resume_action(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        self._each(
            request,
            queryset,
            lambda s: services.subscription_resume(subscription=s, actor=request.user),
            "Resumed",
        )

    @admin.action(description=f"Extend period by {GOODWILL_DAYS} days (goodwill)", permissions=["change"])
    def extend_action(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        self._each(
            request,
            queryset,
            lambda s: services.subscription_extend_period(
                subscription=s, days=GOODWILL_DAYS, staff_user=request.user, note="admin goodwill"
            ),
            f"Extended by {GOODWILL_DAYS} days",
        )

    @admin.action(description="Sync metered items with the plan", permissions=["change"])
    def sync_metered_items_action(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        changed = 0

        def sync(subscription: Subscription) -> None:
            nonlocal changed
            staff = request.user
            changed += services.subscription_metered_items_sync(subscription=subscription, staff_user=staff)

        self._each(request, queryset, sync, "Metered items checked")
        if changed:
            self.message_user(request, f"Stripe items changed: {changed} subscription(s).", messages.SUCCESS)


@admin.register(SubscriptionStripeCall)
class SubscriptionStripeCallAdmin(admin.ModelAdmin):
    """Read only: the intents are written by the services and finished by the sweep."""

    list_display = ["id", "subscription", "action", "status", "attempts", "created_at", "updated_at", "error"]
    list_filter = ["status", "action"]
    search_fields = ["idempotency_key", "subscription__stripe_subscription_id"]
    list_select_related = ["subscription__plan", "subscription__user"]
    date_hierarchy = "created_at"

    def get_readonly_fields(
        self, request: HttpRequest, obj: SubscriptionStripeCall | None = None
    ) -> list[str]:
        return [f.name for f in SubscriptionStripeCall._meta.concrete_fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
