"""Staff console: the usage ledger (read-only), counters per subject and period, staff corrections.

History is never edited here: records and counters are read-only, and a correction is a new signed
UsageAdjustment made by the service (which also moves the counter and writes the audit log).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from payments_project.accounts.links import customer_link
from payments_project.errors import DomainError
from payments_project.ids import int_id
from payments_project.security import INT64_MAX
from usage.models import UsageAdjustment, UsageCounter, UsageRecord, UsageReservation, UsageThreshold
from usage.services import MAX_QUANTITY, usage_adjustment_create


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ["id", "customer", "feature_code", "quantity", "operation", "occurred_at", "over_limit"]
    list_filter = ["feature_code", "over_limit"]
    search_fields = ["=user__id", "user__username", "user__email", "idempotency_key", "subject"]
    list_select_related = ["user"]
    date_hierarchy = "occurred_at"

    @admin.display(description="customer", ordering="user")
    def customer(self, obj: UsageRecord) -> str:
        return customer_link(obj.user_id, obj.user)


@admin.register(UsageCounter)
class UsageCounterAdmin(ReadOnlyAdmin):
    # No id column: the list must fit beside the filter, "Adjust…" included (the feature opens the row).
    list_display = [
        "feature_code",
        "holder",
        "period",
        "period_end",
        "limit",
        "used",
        "reserved",
        "adjust",
    ]
    list_filter = ["feature_code"]
    search_fields = ["=subject", "=user__id", "user__username", "user__email", "=family__id"]
    list_display_links = ["feature_code"]
    list_select_related = ["user", "family"]
    ordering = ["subject", "feature_code", "-period_start"]

    def get_list_display(self, request: HttpRequest) -> Any:
        # "Adjust…" only for those who may make a correction (finance), never a link to a 403.
        shown = list(super().get_list_display(request))
        if not request.user.has_perm("usage.add_usageadjustment"):
            shown.remove("adjust")
        return shown

    @admin.display(description="period start", ordering="period_start")
    def period(self, obj: UsageCounter) -> Any:
        """A limit that never resets has one counter keyed by the epoch: said so, as the API says
        its period_start is null, rather than shown as 1970-01-01."""
        return "never resets" if obj.period_end is None else obj.period_start

    @admin.display(description="quota of", ordering="subject")
    def holder(self, obj: UsageCounter) -> str:
        if obj.family_id:
            url = reverse("admin:subscriptions_family_change", args=[obj.family_id])
            return format_html('family <a href="{}">{}</a>', url, obj.family)
        return customer_link(obj.user_id, obj.user)

    @admin.display(description="correction")
    def adjust(self, obj: UsageCounter) -> str:
        url = reverse("admin:usage_usageadjustment_add") + f"?counter_id={obj.pk}"
        return format_html('<a href="{}">Adjust…</a>', url)


def counter_description(counter: UsageCounter) -> str:
    """ "api_calls of ada, 2026-11-01 00:00 to 2026-12-01 00:00 UTC: 120 used of 1,000" with a
    link to the holder (customer page or family)."""
    if counter.family_id:
        url = reverse("admin:subscriptions_family_change", args=[counter.family_id])
        holder: str = format_html('the family <a href="{}">{}</a>', url, counter.family)
    else:
        holder = customer_link(counter.user_id, counter.user)
    if counter.period_end is None:
        period = "a standing limit (never resets)"
    else:
        period = f"{counter.period_start:%Y-%m-%d %H:%M} to {counter.period_end:%Y-%m-%d %H:%M} UTC"
    limit = "no limit" if counter.limit is None else f"{counter.limit:,}"
    return format_html(
        "<strong>{}</strong> of {}, {}: {} used of {}, {} held.",
        counter.feature_code,
        holder,
        period,
        f"{counter.used:,}",
        limit,
        f"{counter.reserved:,}",
    )


class AdjustmentForm(forms.ModelForm):
    counter_id = forms.IntegerField(min_value=1, max_value=INT64_MAX, label="counter id")
    quantity = forms.IntegerField(
        min_value=-MAX_QUANTITY, max_value=MAX_QUANTITY, help_text="Signed: negative gives units back."
    )
    reason = forms.CharField(max_length=1000, widget=forms.Textarea)

    class Meta:
        model = UsageAdjustment
        fields = ["quantity", "reason"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Say which counter is corrected (whose, which feature and period, where it stands): a
        # bare counter id tells staff nothing.
        raw = str(self.data.get("counter_id") or self.initial.get("counter_id") or "")
        counter_id = int_id(raw)
        counter = (
            UsageCounter.objects.select_related("user", "family").filter(pk=counter_id).first()
            if counter_id
            else None
        )
        if counter is not None:
            self.fields["counter_id"].help_text = counter_description(counter)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        counter = UsageCounter.objects.filter(pk=data.get("counter_id") or 0).first()
        if counter is None:
            self.add_error("counter_id", "No such counter.")
        elif data.get("quantity") == 0:
            self.add_error("quantity", "A correction moves at least one unit.")
        elif data.get("quantity") is not None and counter.used + data["quantity"] < 0:
            self.add_error("quantity", "The counter would become negative.")
        return data


@admin.register(UsageAdjustment)
class UsageAdjustmentAdmin(admin.ModelAdmin):
    """Add-only: a correction is made (and audited) by usage_adjustment_create, never edited."""

    form = AdjustmentForm
    list_display = [
        "id",
        "subject",
        "feature_code",
        "period_start",
        "quantity",
        "reason",
        "staff_user",
        "created_at",
    ]
    search_fields = ["=subject", "=user__id", "user__username", "user__email", "reason"]
    readonly_fields = ["subject", "feature_code", "period_start", "staff_user", "created_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["counter_id", "quantity", "reason"]
        return ["subject", "feature_code", "period_start", "quantity", "reason", "staff_user", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["subject", "feature_code", "period_start", "quantity", "reason", "staff_user", "created_at"]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"counter_id": request.GET.get("counter_id", "")[:20]}

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: UsageAdjustment, form: Any, change: bool) -> None:
        try:
            made = usage_adjustment_create(
                counter_id=form.cleaned_data["counter_id"],
                quantity=form.cleaned_data["quantity"],
                reason=form.cleaned_data["reason"],
                staff_user=request.user,
            )
        except DomainError as exc:  # raced with another correction: shown, nothing written
            raise forms.ValidationError(exc.message) from exc
        obj.pk = made.pk
        obj.__dict__.update({k: v for k, v in made.__dict__.items() if not k.startswith("_")})

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        return None

    def response_add(
        self, request: HttpRequest, obj: UsageAdjustment, post_url_continue: Any = None
    ) -> HttpResponse:
        """After "Save": the corrected counter (and its other periods), showing the new value."""
        response = super().response_add(request, obj, post_url_continue)
        if {"_addanother", "_continue", IS_POPUP_VAR} & set(request.POST):
            return response
        query = urlencode({"subject__exact": obj.subject, "feature_code__exact": obj.feature_code})
        return HttpResponseRedirect(f"{reverse('admin:usage_usagecounter_changelist')}?{query}")


@admin.register(UsageReservation)
class UsageReservationAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "feature_code", "quantity", "settled_quantity", "status", "expires_at"]
    list_filter = ["status", "feature_code"]
    search_fields = ["=user__id", "user__username", "user__email", "idempotency_key"]


@admin.register(UsageThreshold)
class UsageThresholdAdmin(ReadOnlyAdmin):
    list_display = ["id", "subject", "feature_code", "period_start", "level", "limit", "used", "created_at"]
    list_filter = ["level", "feature_code"]
    search_fields = ["=subject"]
