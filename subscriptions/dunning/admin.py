"""Staff console for dunning: cases with their timeline and audited actions, policies with a preview
of the customer's timeline (computed by the sweep's own scheduling code), decline rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing.money import format_money, is_currency
from payments_project.accounts.links import customer_link
from payments_project.errors import DomainError
from payments_project.ids import int_id
from subscriptions.dunning import services
from subscriptions.dunning.models import DeclineRule, DunningAttempt, DunningCase, DunningEmail, DunningPolicy
from subscriptions.dunning.selectors import case_timeline, dunning_timeline, next_retry_at

GRACE_DAYS = 7
ADMIN_REASON = "admin action"


class AttemptInline(admin.TabularInline):
    model = DunningAttempt
    extra = 0
    can_delete = False
    ordering = ["number"]
    fields = readonly_fields = (
        "number",
        "kind",
        "status",
        "due_at",
        "finished_at",
        "decline_code",
        "advice_code",
        "network_advice_code",
        "stripe_payment_method_id",
        "outcome",
    )

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class EmailInline(admin.TabularInline):
    model = DunningEmail
    extra = 0
    can_delete = False
    fields = readonly_fields = ("step", "to", "subject", "created_at", "sent_at")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(DunningCase)
class DunningCaseAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "customer",
        "plan",
        "stage",
        "amount",
        "opened_at",
        "failed_retries",
        "next_retry",
        "cancel_at",
        "needs_new_card",
        "paused",
    ]
    list_filter = ["stage", "subscription__plan", "needs_new_card", "paused"]
    search_fields = [
        "stripe_invoice_id",
        "stripe_customer_id",
        "subscription__stripe_subscription_id",
        "subscription__user__email",
        "subscription__user__username",
    ]
    list_select_related = ["subscription__user", "subscription__plan"]
    date_hierarchy = "opened_at"
    inlines = [AttemptInline, EmailInline]
    actions = ["retry_now_action", "pause_action", "resume_action", "extend_grace_action", "resolve_action"]
    change_form_template = "admin/subscriptions/dunningcase/change_form.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # cases are opened by Stripe's invoice.payment_failed only

    def has_change_permission(self, request: HttpRequest, obj: DunningCase | None = None) -> bool:
        """A case's page is read-only; finance steers it with the list's audited actions."""
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # The customer page links to the list of one customer's cases.
        return lookup == "subscription__user__id__exact" or super().lookup_allowed(lookup, value, request)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The case page, with buttons for the list's actions that apply to this case and that
        the role may run (none for support, none once the case is closed)."""
        case_id = int_id(object_id)
        case = DunningCase.objects.filter(pk=case_id).first() if case_id else None
        buttons: list[tuple[str, str]] = []
        if case is not None and case.is_open:
            allowed = self.get_actions(request)
            wanted = [
                "retry_now_action",
                "resume_action" if case.paused else "pause_action",
                "extend_grace_action",
                "resolve_action",
            ]
            buttons = [(name, str(action[2])) for name in wanted if (action := allowed.get(name))]
        context = {**(extra_context or {}), "case_actions": buttons}
        return super().change_view(request, object_id, form_url, context)

    def get_fields(self, request: HttpRequest, obj: DunningCase | None = None) -> list[Any]:
        # Amounts in the currency's format, Stripe ids as links to Stripe's mirror.
        replaced = {
            "amount_due": "amount",
            "recovered_amount": "recovered",
            "stripe_invoice_id": "invoice",
            "stripe_customer_id": "stripe_customer",
        }
        shown = [
            replaced.get(f.name, f.name)
            for f in DunningCase._meta.concrete_fields
            if f.name not in ("id", "subscription", "currency")
        ]
        return ["customer", "subscription", "state", "timeline", *shown]

    def get_readonly_fields(self, request: HttpRequest, obj: DunningCase | None = None) -> list[str]:
        return self.get_fields(request, obj)

    @admin.display(description="customer")
    def customer(self, obj: DunningCase) -> str:
        return customer_link(obj.subscription.user_id, obj.subscription.user)

    @admin.display(description="plan", ordering="subscription__plan__code")
    def plan(self, obj: DunningCase) -> str:
        return obj.subscription.plan.code

    @admin.display(description="amount due")
    def amount(self, obj: DunningCase) -> str:
        return (
            format_money(obj.amount_due, obj.currency) if is_currency(obj.currency) else str(obj.amount_due)
        )

    @admin.display(description="recovered")
    def recovered(self, obj: DunningCase) -> str:
        if obj.recovered_amount is None or not is_currency(obj.currency):
            return "-"
        return format_money(obj.recovered_amount, obj.currency)

    @admin.display(description="invoice")
    def invoice(self, obj: DunningCase) -> str:
        url = reverse("admin:djstripe_invoice_changelist") + f"?q={obj.stripe_invoice_id}"
        return format_html('<a href="{}">{}</a>', url, obj.stripe_invoice_id)

    @admin.display(description="Stripe customer")
    def stripe_customer(self, obj: DunningCase) -> str:
        if not obj.stripe_customer_id:
            return "-"
        url = reverse("admin:djstripe_customer_changelist") + f"?q={obj.stripe_customer_id}"
        return format_html('<a href="{}">{}</a>', url, obj.stripe_customer_id)

    @admin.display(description="state")
    def state(self, obj: DunningCase) -> str:
        """Where the case stands, in one line (what the actions change)."""
        if not obj.is_open:
            closed = obj.closed_at.strftime("%Y-%m-%d %H:%M UTC") if obj.closed_at else "-"
            return f"{obj.get_stage_display()}, closed {closed}" + (
                f": {obj.close_reason}" if obj.close_reason else ""
            )
        parts = [obj.get_stage_display()]
        if obj.paused:
            parts.append("paused: no retry and no cancellation until resumed")
        else:
            retry = next_retry_at(case=obj)
            parts.append(f"next retry {retry:%Y-%m-%d %H:%M} UTC" if retry else "no retry scheduled")
        if obj.needs_new_card:
            parts.append("needs a new card")
        grace = f" (+{obj.grace_days} days of grace)" if obj.grace_days else ""
        parts.append(f"cancel day {obj.cancel_at:%Y-%m-%d %H:%M} UTC{grace}")
        return " · ".join(parts)

    @admin.display(description="next retry")
    def next_retry(self, obj: DunningCase) -> Any:
        return next_retry_at(case=obj) if obj.is_open else None

    @admin.display(description="timeline")
    def timeline(self, obj: DunningCase) -> str:
        rows = case_timeline(case=obj)
        if not rows:
            return "-"
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((row["at"].strftime("%Y-%m-%d %H:%M"), row["what"], row["detail"]) for row in rows),
        )
        return format_html("<table><tr><th>when (UTC)</th><th>what</th><th>detail</th></tr>{}</table>", body)

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[DunningCase],
        run: Callable[[DunningCase], object],
        done: str,
    ) -> HttpResponse | None:
        ok = 0
        cases = list(queryset)
        for case in cases:
            try:
                run(case)
                ok += 1
            except DomainError as exc:
                self.message_user(request, f"#{case.pk}: {exc.message}", messages.ERROR)
        if ok:
            self.message_user(request, f"{done}: {ok} case(s).", messages.SUCCESS)
        if request.POST.get("_case_page") and len(cases) == 1:
            # A button on the case's own page: back to that page, which shows the result.
            return HttpResponseRedirect(reverse("admin:subscriptions_dunningcase_change", args=[cases[0].pk]))
        return None

    @admin.action(description="Retry now", permissions=["change"])
    def retry_now_action(self, request: HttpRequest, queryset: QuerySet[DunningCase]) -> HttpResponse | None:
        return self._each(
            request,
            queryset,
            lambda c: services.dunning_retry_now(case=c, staff_user=request.user, reason=ADMIN_REASON),
            "Retry queued",
        )

    @admin.action(description="Pause (no retry, no cancellation)", permissions=["change"])
    def pause_action(self, request: HttpRequest, queryset: QuerySet[DunningCase]) -> HttpResponse | None:
        return self._each(
            request,
            queryset,
            lambda c: services.dunning_pause(
                case=c, staff_user=request.user, paused=True, reason=ADMIN_REASON
            ),
            "Paused",
        )

    @admin.action(description="Resume", permissions=["change"])
    def resume_action(self, request: HttpRequest, queryset: QuerySet[DunningCase]) -> HttpResponse | None:
        return self._each(
            request,
            queryset,
            lambda c: services.dunning_pause(
                case=c, staff_user=request.user, paused=False, reason=ADMIN_REASON
            ),
            "Resumed",
        )

    @admin.action(description=f"Extend grace by {GRACE_DAYS} days", permissions=["change"])
    def extend_grace_action(
        self, request: HttpRequest, queryset: QuerySet[DunningCase]
    ) -> HttpResponse | None:
        return self._each(
            request,
            queryset,
            lambda c: services.dunning_extend_grace(
                case=c, staff_user=request.user, days=GRACE_DAYS, reason=ADMIN_REASON
            ),
            f"Cancel day moved {GRACE_DAYS} days later",
        )

    @admin.action(description="Mark resolved (stop dunning)", permissions=["change"])
    def resolve_action(self, request: HttpRequest, queryset: QuerySet[DunningCase]) -> HttpResponse | None:
        return self._each(
            request,
            queryset,
            lambda c: services.dunning_mark_resolved(case=c, staff_user=request.user, reason=ADMIN_REASON),
            "Resolved",
        )


class DunningPolicyForm(forms.ModelForm):
    class Meta:
        model = DunningPolicy
        fields = [
            "plan",
            "name",
            "retry_offsets_days",
            "past_due_access",
            "past_due_features",
            "suspend_after_failed_retries",
            "cancel_after_days",
            "invoice_end",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        plan = data.get("plan")
        if plan is None and not (self.instance.pk and self.instance.is_default):
            self.add_error("plan", "Choose a plan: the default policy exists already.")
            return data
        try:
            services.dunning_policy_validate(
                plan=plan,
                retry_offsets_days=data.get("retry_offsets_days"),
                past_due_access=str(data.get("past_due_access") or ""),
                past_due_features=data.get("past_due_features") or [],
                suspend_after_failed_retries=int(data.get("suspend_after_failed_retries") or 0),
                cancel_after_days=int(data.get("cancel_after_days") or 0),
            )
        except DomainError as exc:
            for field, errors in exc.fields.items():
                for error in errors:
                    self.add_error(field if field in self.fields else None, error["message"])
        return data


@admin.register(DunningPolicy)
class DunningPolicyAdmin(admin.ModelAdmin):
    form = DunningPolicyForm
    list_display = [
        "name",
        "plan",
        "retry_offsets_days",
        "past_due_access",
        "suspend_after_failed_retries",
        "cancel_after_days",
    ]
    list_select_related = ["plan"]
    search_fields = ["name", "plan__code"]
    readonly_fields = ["timeline_preview"]

    def has_delete_permission(self, request: HttpRequest, obj: DunningPolicy | None = None) -> bool:
        # The default policy stays (plans without their own use it); others go with superusers.
        return obj is not None and not obj.is_default and super().has_delete_permission(request, obj)

    def get_fields(self, request: HttpRequest, obj: DunningPolicy | None = None) -> list[Any]:
        return [*DunningPolicyForm.Meta.fields, "timeline_preview"]

    @admin.display(description="the customer's timeline (a card that keeps failing)")
    def timeline_preview(self, obj: DunningPolicy | None) -> str:
        if obj is None or obj.pk is None:
            return "Saved policies show their timeline here."
        steps = dunning_timeline(policy=obj, opened_at=timezone.now())
        return format_html(
            "<table><tr><th>day</th><th>date if it failed now (UTC)</th><th>what happens</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((step.day, step.at.strftime("%Y-%m-%d %H:%M"), step.what) for step in steps),
            ),
        )

    def save_model(self, request: HttpRequest, obj: DunningPolicy, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.dunning_policy_saved(policy=obj)


@admin.register(DeclineRule)
class DeclineRuleAdmin(admin.ModelAdmin):
    list_display = [
        "decline_code",
        "advice_code",
        "network_advice_code",
        "action",
        "not_before_hours",
        "note",
    ]
    list_filter = ["action"]
    search_fields = ["decline_code", "advice_code", "network_advice_code", "note"]
