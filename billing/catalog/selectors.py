"""Reads of the catalog: zones, plans and the price of a plan in a zone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Prefetch, QuerySet

from billing.models import (
    CustomerPricing,
    MeteredPrice,
    Plan,
    PlanFeature,
    PricingZone,
    StripePrice,
    ZoneCountry,
    ZonePrice,
)
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
    """Plans with everything a price list needs, in five queries whatever the count (a plan
    feature's metered price in `zone` is its `zone_metered_prices`)."""
    plans = Plan.objects.all()
    if active_only:
        plans = plans.filter(active=True)
    zone_prices = ZonePrice.objects.filter(zone=zone) if zone else ZonePrice.objects.none()
    metered = (
        MeteredPrice.objects.filter(zone=zone).select_related("zone") if zone else MeteredPrice.objects.none()
    )
    features = PlanFeature.objects.select_related("feature").prefetch_related(
        Prefetch("metered_prices", queryset=metered, to_attr="zone_metered_prices")
    )
    return plans.prefetch_related(
        Prefetch("plan_features", queryset=features),
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


def plan_feature_metered_price(*, plan_feature: PlanFeature, zone: PricingZone | None) -> MeteredPrice | None:
    """The price per unit of `plan_feature` in `zone`, if it is billed by usage there (reads the
    prefetched `zone_metered_prices` when the plan came from `plan_list`)."""
    if zone is None:
        return None
    prices = getattr(plan_feature, "zone_metered_prices", None)
    if prices is None:
        prices = list(plan_feature.metered_prices.filter(zone=zone).select_related("zone"))
    return prices[0] if prices else None


# Cloudflare's values for "no country": unknown (XX) and Tor (T1).
_NO_COUNTRY = frozenset({"XX", "T1", "ZZ"})


def trusted_country(*, meta: Mapping[str, Any]) -> str | None:
    """The country the trusted proxy's header names (settings.PRICING_COUNTRY_HEADER, e.g.
    CF-IPCountry), or None: no header configured, none sent, or not a country code. Never a
    request parameter: docs/pricing-trust.md."""
    header = settings.PRICING_COUNTRY_HEADER
    if not header:
        return None
    value = str(meta.get("HTTP_" + header.upper().replace("-", "_"), "")).strip().upper()
    if len(value) != 2 or not value.isascii() or not value.isalpha() or value in _NO_COUNTRY:
        return None
    return value


def customer_pricing_get(*, user: Any) -> CustomerPricing | None:
    return CustomerPricing.objects.filter(user_id=user.pk).first() if user.is_authenticated else None
