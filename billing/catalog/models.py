"""The catalog every other app reads: features, plans, their limits, prices and pricing zones."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from billing.money import Rounding, format_money

code_validator = RegexValidator(r"^[a-z0-9][a-z0-9_.-]{0,63}$", "Lowercase letters, digits, _ . -")
currency_validator = RegexValidator(r"^[A-Z]{3}$", "An ISO 4217 code in capitals, e.g. USD.")
# Stripe meter event names: what a usage report names (billing/metering).
meter_event_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]{0,99}$", "Lowercase letters, digits, _ . - (at most 100)."
)
country_validator = RegexValidator(r"^[A-Z]{2}$", "An ISO 3166-1 alpha-2 code, e.g. FR.")


class Feature(models.Model):
    class Kind(models.TextChoices):
        BOOLEAN = "boolean", "On/off"
        METERED = "metered", "Metered (counted, may be billed)"
        LIMIT = "limit", "Limit (a ceiling on a count)"

    code = models.CharField(max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.BOOLEAN)
    unit = models.CharField(max_length=32, blank=True, help_text="What a limit counts, e.g. 'calls'.")
    meter_event_name = models.CharField(
        max_length=100,
        blank=True,
        validators=[meter_event_name_validator],
        help_text="Features billed by usage: the Stripe meter event name their usage is reported under.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(
                fields=["meter_event_name"],
                condition=~Q(meter_event_name=""),
                name="feature_meter_event_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.code


class Plan(models.Model):
    class Interval(models.TextChoices):
        MONTH = "month", "Monthly"
        YEAR = "year", "Yearly"
        ONE_TIME = "one_time", "One-time purchase"

    code = models.CharField(max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    interval = models.CharField(max_length=16, choices=Interval.choices, default=Interval.MONTH)
    interval_count = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    trial_days = models.PositiveSmallIntegerField(default=0)
    active = models.BooleanField(default=True)
    is_family = models.BooleanField(default=False, help_text="Shared by the members of a family.")
    max_members = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Family plans only: members including the owner."
    )
    sort_order = models.PositiveSmallIntegerField(default=0)
    stripe_product_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    features: models.ManyToManyField[Feature, PlanFeature] = models.ManyToManyField(
        Feature, through="PlanFeature", related_name="plans"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sort_order", "code"]
        constraints = [
            models.CheckConstraint(
                name="plan_family_has_max_members",
                condition=Q(is_family=False, max_members__isnull=True)
                | Q(is_family=True, max_members__gte=2),
            ),
        ]

    def __str__(self) -> str:
        return self.code


class QuotaPolicy(models.TextChoices):
    HARD = "hard", "Hard: refuse at the limit"
    SOFT = "soft", "Soft: record and flag past the limit"
    OVERAGE = "overage", "Hard with an overage allowance"


class PlanFeature(models.Model):
    QuotaPolicy = QuotaPolicy

    class Reset(models.TextChoices):
        NEVER = "never", "Never"
        DAY = "day", "Daily"
        MONTH = "month", "Monthly"
        BILLING_PERIOD = "billing_period", "Each billing period"

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="plan_features")
    feature = models.ForeignKey(Feature, on_delete=models.PROTECT, related_name="plan_features")
    limit = models.BigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Empty = unlimited."
    )
    reset_period = models.CharField(max_length=16, choices=Reset.choices, default=Reset.NEVER)
    # What the usage app does at the limit (metered and limit features).
    quota_policy = models.CharField(
        max_length=16,
        choices=QuotaPolicy.choices,
        default=QuotaPolicy.HARD,
        help_text="At the limit: refuse (hard), record and flag (soft), or refuse past the overage.",
    )
    overage_percent = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(1000)],
        help_text="Hard with overage only: how far past the limit usage may go, in percent of it.",
    )

    class Meta:
        ordering = ["plan", "feature"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "feature"], name="planfeature_unique"),
            models.CheckConstraint(name="planfeature_limit_not_negative", condition=Q(limit__gte=0)),
            models.CheckConstraint(
                name="planfeature_overage_percent_range", condition=Q(overage_percent__lte=1000)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan.code}:{self.feature.code}"

    @property
    def unlimited(self) -> bool:
        return self.limit is None


class Price(models.Model):
    """A plan's list price in one currency; the base that pricing zones adjust."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="prices")
    currency = models.CharField(max_length=3, validators=[currency_validator])
    amount = models.PositiveBigIntegerField(help_text="Minor units: cents, yen, fils.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["plan", "currency"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "currency"], name="price_one_per_currency"),
        ]

    def __str__(self) -> str:
        return f"{self.plan.code} {self.display_amount}"

    @property
    def display_amount(self) -> str:
        return format_money(self.amount, self.currency)


class PricingZone(models.Model):
    """A group of countries paying in one currency, at the plan's price times a multiplier."""

    code = models.CharField(max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, validators=[currency_validator])
    multiplier = models.DecimalField(
        max_digits=6, decimal_places=4, default=Decimal("1"), validators=[MinValueValidator(0)]
    )
    rounding = models.CharField(
        max_length=8,
        choices=[(r.value, r.name.title()) for r in Rounding],
        default=Rounding.EXACT.value,
    )
    is_default = models.BooleanField(default=False, help_text="Used for countries that belong to no zone.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="pricingzone_one_default"
            ),
            models.CheckConstraint(name="pricingzone_multiplier_positive", condition=Q(multiplier__gt=0)),
        ]

    def __str__(self) -> str:
        return self.code


class ZoneCountry(models.Model):
    """A country belongs to at most one zone: the unique constraint says so, not the code."""

    zone = models.ForeignKey(PricingZone, on_delete=models.CASCADE, related_name="countries")
    country = models.CharField(max_length=2, unique=True, validators=[country_validator])

    class Meta:
        ordering = ["country"]
        verbose_name_plural = "zone countries"

    def __str__(self) -> str:
        return self.country


class ZonePrice(models.Model):
    """An explicit price for a plan in a zone, overriding the multiplier."""

    zone = models.ForeignKey(PricingZone, on_delete=models.CASCADE, related_name="zone_prices")
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="zone_prices")
    amount = models.PositiveBigIntegerField(help_text="Minor units of the zone's currency.")

    class Meta:
        ordering = ["zone", "plan"]
        constraints = [
            models.UniqueConstraint(fields=["zone", "plan"], name="zoneprice_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.zone.code}:{self.plan.code}"

    @property
    def display_amount(self) -> str:
        return format_money(self.amount, self.zone.currency)


class StripePrice(models.Model):
    """The Stripe price object for one (plan, currency, amount, billing interval): Stripe prices are
    immutable, so a new amount or interval is a new row, and each is pushed once."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="stripe_prices")
    currency = models.CharField(max_length=3, validators=[currency_validator])
    amount = models.PositiveBigIntegerField()
    interval = models.CharField(max_length=16, choices=Plan.Interval.choices)
    interval_count = models.PositiveSmallIntegerField(default=1)
    stripe_price_id = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["plan", "currency", "amount"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "currency", "amount", "interval", "interval_count"],
                name="stripeprice_unique_price",
            ),
        ]

    def __str__(self) -> str:
        return self.stripe_price_id


class MeteredPrice(models.Model):
    """A plan feature billed per unit of usage in one pricing zone's currency: in Stripe, a metered
    price of the plan's product on the feature's meter. Stripe prices are immutable, so a new unit
    amount (or plan interval) is pushed as a new Stripe price: `stripe_price_key` says which
    (currency, amount, interval) the current `stripe_price_id` charges."""

    plan_feature = models.ForeignKey(PlanFeature, on_delete=models.CASCADE, related_name="metered_prices")
    zone = models.ForeignKey(PricingZone, on_delete=models.CASCADE, related_name="metered_prices")
    unit_amount = models.PositiveBigIntegerField(
        help_text="Minor units of the zone's currency, per unit used."
    )
    stripe_price_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_price_key = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["plan_feature", "zone"]
        constraints = [
            models.UniqueConstraint(fields=["plan_feature", "zone"], name="meteredprice_one_per_zone"),
        ]

    def __str__(self) -> str:
        return f"{self.plan_feature} {self.zone.code}: {self.display_amount}/unit"

    @property
    def currency(self) -> str:
        return self.zone.currency

    @property
    def display_amount(self) -> str:
        return format_money(self.unit_amount, self.zone.currency)


class CustomerPricing(models.Model):
    """The country a customer is priced for (docs/pricing-trust.md): taken from a trusted source
    at their first purchase, never from a request parameter, and kept; the card's country is
    compared after payment and a mismatch flagged for support. Staff change it, audited."""

    class Source(models.TextChoices):
        PROXY_HEADER = "proxy_header", "Trusted proxy header"
        UNKNOWN = "unknown", "Unknown (default zone)"
        STAFF = "staff", "Set by staff"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pricing")
    # "" when no trusted source named one: the default zone's prices.
    country = models.CharField(max_length=2, blank=True, validators=[country_validator])
    source = models.CharField(max_length=16, choices=Source.choices)
    card_country = models.CharField(max_length=2, blank=True, validators=[country_validator])
    card_mismatch = models.BooleanField(
        default=False, help_text="The card paid with was issued in another country than the priced one."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "customer pricing country"
        verbose_name_plural = "customer pricing countries"
        indexes = [
            models.Index(
                fields=["card_mismatch"], condition=Q(card_mismatch=True), name="pricing_card_mismatch"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.country or '-'}"
