"""Staff console for the catalog: features, plans with their limits and prices, pricing zones.

Every add, change and delete of a catalog row (inline rows included) and every push to Stripe goes
through the catalog services, which write the audit log with the staff user."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from billing.catalog.services import (
    catalog_plan_changed_record,
    catalog_push_to_stripe,
    catalog_row_delete,
    catalog_row_save,
    catalog_zone_changed_record,
    customer_pricing_override,
    metered_prices_push,
)
from billing.forms import MoneyField, money_clean
from billing.models import (
    CustomerPricing,
    Feature,
    MeteredPrice,
    Plan,
    PlanFeature,
    Price,
    PricingZone,
    StripePrice,
    ZoneCountry,
    ZonePrice,
)
from billing.money import format_money, is_currency, is_stripe_currency
from payments_project.errors import DomainError


class AuditedCatalogAdmin(admin.ModelAdmin):
    """Saves and deletes the page's row and its inline rows through the audited catalog services."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        catalog_row_save(row=obj, actor=request.user, created=not change, changed=form.changed_data)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        catalog_row_delete(row=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        with transaction.atomic():
            for obj in queryset:
                catalog_row_delete(row=obj, actor=request.user)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        formset.save(commit=False)  # fills new_objects, changed_objects and deleted_objects
        for obj in formset.deleted_objects:
            catalog_row_delete(row=obj, actor=request.user)
        for obj in formset.new_objects:
            catalog_row_save(row=obj, actor=request.user, created=True)
        for obj, fields in formset.changed_objects:
            catalog_row_save(row=obj, actor=request.user, created=False, changed=fields)
        formset.save_m2m()


@admin.register(Feature)
class FeatureAdmin(AuditedCatalogAdmin):
    list_display = ["code", "name", "kind", "unit", "meter_event_name", "plan_count"]
    list_filter = ["kind"]
    search_fields = ["code", "name", "meter_event_name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Feature]:
        return super().get_queryset(request).annotate(_plans=Count("plans"))

    @admin.display(description="plans", ordering="_plans")
    def plan_count(self, obj: Feature) -> int:
        return obj._plans  # type: ignore[attr-defined]


class PlanFeatureInline(admin.TabularInline):
    model = PlanFeature
    extra = 0
    autocomplete_fields = ["feature"]


class MeteredPriceForm(forms.ModelForm):
    """A plan feature's price per unit used, typed in real units of the zone's currency."""

    unit_amount = MoneyField(label="price per unit", min_minor=1)

    class Meta:
        model = MeteredPrice
        fields = ["plan_feature", "zone", "unit_amount"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read-only viewers (support) get a form without fields.
        if "plan_feature" in self.fields:
            choices = self.fields["plan_feature"]
            choices.queryset = PlanFeature.objects.select_related("plan", "feature")  # type: ignore[attr-defined]
        if "unit_amount" in self.fields:
            zone = self.instance.zone if self.instance.zone_id else None
            self.fields["unit_amount"].set_currency(zone.currency if zone else None)  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        zone: PricingZone | None = cleaned.get("zone")
        money_clean(self, "unit_amount", zone.currency if zone else None)
        plan_feature: PlanFeature | None = cleaned.get("plan_feature")
        if plan_feature is not None:
            if not plan_feature.feature.meter_event_name:
                self.add_error(
                    "plan_feature",
                    forms.ValidationError(
                        "Give the feature a meter event name first: usage is reported under it.",
                        code="no_meter",
                    ),
                )
            if plan_feature.plan.interval == Plan.Interval.ONE_TIME:
                self.add_error(
                    "plan_feature",
                    forms.ValidationError(
                        "A one-time plan has no billing period to bill usage in.", code="one_time"
                    ),
                )
        return cleaned


@admin.register(MeteredPrice)
class MeteredPriceAdmin(AuditedCatalogAdmin):
    form = MeteredPriceForm
    list_display = ["plan_feature", "zone", "per_unit", "stripe_price_id"]
    list_filter = ["zone", "plan_feature__plan"]
    search_fields = ["plan_feature__plan__code", "plan_feature__feature__code", "=stripe_price_id"]
    list_select_related = ["plan_feature__plan", "plan_feature__feature", "zone"]
    readonly_fields = ["stripe_price_id", "created_at", "updated_at"]
    actions = ["push_to_stripe"]

    @admin.display(description="per unit", ordering="unit_amount")
    def per_unit(self, obj: MeteredPrice) -> str:
        return obj.display_amount

    @admin.action(description="Create missing Stripe meters and metered prices", permissions=["change"])
    def push_to_stripe(self, request: HttpRequest, queryset: QuerySet[MeteredPrice]) -> None:
        try:
            created = metered_prices_push(actor=request.user)
        except DomainError as exc:
            self.message_user(request, f"Stripe push failed: {exc.message}", messages.ERROR)
            return
        self.message_user(request, f"{created} Stripe metered prices created.", messages.SUCCESS)


class PriceForm(forms.ModelForm):
    """A list price typed in real units of the row's own currency."""

    amount = MoneyField(label="amount")

    class Meta:
        model = Price
        fields = ["currency", "amount", "active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["amount"].set_currency(self.instance.currency or None)  # type: ignore[attr-defined]

    def clean_currency(self) -> str:
        currency = str(self.cleaned_data.get("currency") or "").upper()
        if not is_stripe_currency(currency):
            raise forms.ValidationError(
                "An ISO 4217 code Stripe charges in, e.g. EUR, JPY, KWD.", code="invalid"
            )
        return currency

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        money_clean(self, "amount", cleaned.get("currency"))
        return cleaned


class PriceInline(admin.TabularInline):
    model = Price
    form = PriceForm
    extra = 0
    fields = ["currency", "amount", "shown_as", "active"]
    readonly_fields = ["shown_as"]

    @admin.display(description="shown as")
    def shown_as(self, obj: Price) -> str:
        # The empty row of the add form has no currency yet.
        return format_money(obj.amount, obj.currency) if obj.pk and is_currency(obj.currency) else "-"


@admin.register(Plan)
class PlanAdmin(AuditedCatalogAdmin):
    list_display = ["code", "name", "interval", "trial_days", "is_family", "active", "list_prices"]
    list_filter = ["active", "interval", "is_family"]
    search_fields = ["code", "name"]
    readonly_fields = ["stripe_product_id", "created_at", "updated_at"]
    inlines = [PlanFeatureInline, PriceInline]
    actions = ["push_to_stripe"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Plan]:
        return super().get_queryset(request).prefetch_related("prices")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """After the plan and its inlines are saved (in the admin's transaction): announce it."""
        super().save_related(request, form, formsets, change)
        prices: list[Price] = []
        for formset in formsets:
            if formset.model is Price:
                # (a deleted price was announced by catalog_row_delete as it went)
                prices += [*formset.new_objects, *(obj for obj, _fields in formset.changed_objects)]
        catalog_plan_changed_record(plan=form.instance, changed_prices=prices, actor=request.user)

    @admin.display(description="prices")
    def list_prices(self, obj: Plan) -> str:
        return ", ".join(p.display_amount for p in obj.prices.all() if p.active) or "-"

    @admin.action(description="Create missing Stripe products and prices", permissions=["change"])
    def push_to_stripe(self, request: HttpRequest, queryset: QuerySet[Plan]) -> None:
        try:
            created = catalog_push_to_stripe(actor=request.user)
        except DomainError as exc:
            self.message_user(request, f"Stripe push failed: {exc.message}", messages.ERROR)
            return
        self.message_user(request, f"{created} Stripe prices created.", messages.SUCCESS)


class ZoneCountryInline(admin.TabularInline):
    model = ZoneCountry
    extra = 1


class ZonePriceForm(forms.ModelForm):
    """An explicit price typed in real units of the zone's currency."""

    amount = MoneyField(label="amount", help_text="In real units of the zone's currency, e.g. 7.99.")

    class Meta:
        model = ZonePrice
        fields = ["plan", "amount"]

    def __init__(self, *args: Any, zone: PricingZone | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The zone above the rows (PricingZoneAdmin.get_formset_kwargs); on the add page it is not
        # saved yet but already holds the currency typed in its own form.
        self.zone = zone
        self.fields["amount"].set_currency(zone.currency if zone else None)  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        money_clean(self, "amount", self.zone.currency if self.zone else None)
        return cleaned


class ZonePriceInline(admin.TabularInline):
    model = ZonePrice
    form = ZonePriceForm
    extra = 0
    fields = ["plan", "amount", "shown_as"]
    readonly_fields = ["shown_as"]

    @admin.display(description="shown as")
    def shown_as(self, obj: ZonePrice) -> str:
        return obj.display_amount if obj.pk else "-"


@admin.register(PricingZone)
class PricingZoneAdmin(AuditedCatalogAdmin):
    list_display = ["code", "name", "currency", "multiplier", "rounding", "is_default", "country_list"]
    list_filter = ["currency", "rounding", "is_default"]
    search_fields = ["code", "name", "countries__country"]
    inlines = [ZoneCountryInline, ZonePriceInline]

    def get_formset_kwargs(
        self, request: HttpRequest, obj: PricingZone, inline: Any, prefix: str
    ) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, ZonePriceInline):
            kwargs["form_kwargs"] = {"zone": obj}
        return kwargs

    def get_queryset(self, request: HttpRequest) -> QuerySet[PricingZone]:
        return super().get_queryset(request).prefetch_related("countries")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        catalog_zone_changed_record(zone=form.instance, actor=request.user)

    @admin.display(description="countries")
    def country_list(self, obj: PricingZone) -> str:
        countries = " ".join(c.country for c in obj.countries.all())
        return countries or ("all others" if obj.is_default else "-")


@admin.register(StripePrice)
class StripePriceAdmin(admin.ModelAdmin):
    list_display = ["stripe_price_id", "plan", "money", "created_at"]
    list_filter = ["currency", "plan"]
    search_fields = ["stripe_price_id", "plan__code"]
    list_select_related = ["plan"]

    @admin.display(description="amount", ordering="amount")
    def money(self, obj: StripePrice) -> str:
        return format_money(obj.amount, obj.currency)

    def has_delete_permission(self, request: HttpRequest, obj: StripePrice | None = None) -> bool:
        return False  # the record of what exists at Stripe (Stripe prices are never deleted)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from pushing the catalog, never typed by hand

    def has_change_permission(self, request: HttpRequest, obj: StripePrice | None = None) -> bool:
        return False


class CustomerPricingForm(forms.ModelForm):
    reason = forms.CharField(
        max_length=1000, help_text="Why the country changes (kept in the audit log).", widget=forms.Textarea
    )

    class Meta:
        model = CustomerPricing
        fields = ["country"]

    def clean_country(self) -> str:
        country = str(self.cleaned_data.get("country") or "").upper()
        if len(country) != 2 or not country.isascii() or not country.isalpha():
            raise forms.ValidationError("An ISO 3166-1 alpha-2 code, e.g. FR.", code="invalid")
        return country


@admin.register(CustomerPricing)
class CustomerPricingAdmin(admin.ModelAdmin):
    """Each customer's pricing country (docs/pricing-trust.md). Support reads it and filters the
    card-country mismatches; finance changes a country, audited (a new row is never typed: the
    first purchase makes it)."""

    form = CustomerPricingForm
    list_display = ["user", "country", "source", "card_country", "card_mismatch", "created_at"]
    list_filter = ["card_mismatch", "source"]
    search_fields = ["user__email", "user__username", "=country", "=card_country"]
    readonly_fields = ["user", "source", "card_country", "card_mismatch", "created_at", "updated_at"]
    list_select_related = ["user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: CustomerPricing, form: Any, change: bool) -> None:
        customer_pricing_override(
            pricing=CustomerPricing.objects.get(pk=obj.pk),
            country=form.cleaned_data["country"],
            staff_user=request.user,
            reason=form.cleaned_data["reason"],
        )

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        obj.refresh_from_db()
        return super().log_change(request, obj, message)
