"""Reads of the catalog: zones, plans and the price of a plan in a zone."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models import Prefetch, QuerySet

from billing.models import Plan, PlanFeature, PricingZone, StripePrice, ZoneCountry, ZonePrice
from billing.money import Rounding, apply_multiplier, format_money


@dataclass(frozen=True)
class Quote:
    amount: int
    currency: str
    source: str  # "zone_price" (explicit), "multiplier" (list price x zone), "list" (no zone)

    @property
    def display(self) -> str:
        return format_money(self.amount, self.currency)


def zone_for_country(*, country: str | None) -> PricingZone | None:
    """The zone that holds `country`, else the default zone, else None (list prices)."""
    if country:
        link = ZoneCountry.objects.select_related("zone").filter(country=country).first()
        if link is not None:
            return link.zone
    return PricingZone.objects.filter(is_default=True).first()


def plan_list(*, zone: PricingZone | None, active_only: bool = True) -> QuerySet[Plan]:
    """Plans with everything a price list needs, in four queries whatever the count."""
    plans = Plan.objects.all()
    if active_only:
        plans = plans.filter(active=True)
    zone_prices = ZonePrice.objects.filter(zone=zone) if zone else ZonePrice.objects.none()
    return plans.prefetch_related(
        Prefetch("plan_features", queryset=PlanFeature.objects.select_related("feature")),
        "prices",
        Prefetch("zone_prices", queryset=zone_prices, to_attr="zone_price_list"),
    )


def plan_quote(*, plan: Plan, zone: PricingZone | None) -> Quote | None:
    """What `plan` costs in `zone`; None when the plan is not sold in the zone's currency.

    Reads only prefetched relations when `plan` came from `plan_list`.
    """
    if zone is None:
        currency = settings.BILLING_DEFAULT_CURRENCY
        for price in plan.prices.all():
            if price.currency == currency and price.active:
                return Quote(price.amount, currency, "list")
        return None
    overrides = getattr(plan, "zone_price_list", None)
    if overrides is None:
        overrides = list(plan.zone_prices.filter(zone=zone))
    if overrides:
        return Quote(overrides[0].amount, zone.currency, "zone_price")
    for price in plan.prices.all():
        if price.currency == zone.currency and price.active:
            amount = apply_multiplier(
                price.amount, zone.currency, Decimal(zone.multiplier), Rounding(zone.rounding)
            )
            return Quote(amount, zone.currency, "multiplier")
    return None


def stripe_price_find(*, plan: Plan, currency: str, amount: int) -> StripePrice | None:
    """The Stripe price billing `plan` at this amount on the plan's current interval, if pushed."""
    return StripePrice.objects.filter(
        plan=plan,
        currency=currency,
        amount=amount,
        interval=plan.interval,
        interval_count=plan.interval_count,
    ).first()
