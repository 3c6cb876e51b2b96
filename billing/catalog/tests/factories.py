from __future__ import annotations

from decimal import Decimal

import factory

from billing.catalog.models import (
    CustomerPricing,
    Feature,
    MeteredPrice,
    Plan,
    PlanFeature,
    Price,
    PricingZone,
    ZoneCountry,
    ZonePrice,
)


class FeatureFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feature

    code = factory.Sequence(lambda n: f"feature_{n}")
    name = factory.LazyAttribute(lambda f: f.code.replace("_", " ").title())
    kind = Feature.Kind.BOOLEAN


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    code = factory.Sequence(lambda n: f"plan_{n}")
    name = factory.LazyAttribute(lambda p: p.code.title())
    interval = Plan.Interval.MONTH


class PlanFeatureFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlanFeature

    plan = factory.SubFactory(PlanFactory)
    feature = factory.SubFactory(FeatureFactory)
    limit = None


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Price

    plan = factory.SubFactory(PlanFactory)
    currency = "USD"
    amount = 999


class PricingZoneFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PricingZone

    code = factory.Sequence(lambda n: f"zone_{n}")
    name = factory.LazyAttribute(lambda z: z.code.title())
    currency = "USD"
    multiplier = Decimal("1")


class ZoneCountryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ZoneCountry

    zone = factory.SubFactory(PricingZoneFactory)
    country = "FR"


class ZonePriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ZonePrice

    zone = factory.SubFactory(PricingZoneFactory)
    plan = factory.SubFactory(PlanFactory)
    amount = 500


class MeteredPriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MeteredPrice

    plan_feature = factory.SubFactory(
        PlanFeatureFactory,
        feature=factory.SubFactory(
            FeatureFactory,
            kind=Feature.Kind.METERED,
            meter_event_name=factory.Sequence(lambda n: f"metered_{n}"),
        ),
    )
    zone = factory.SubFactory(PricingZoneFactory)
    unit_amount = 2


class CustomerPricingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CustomerPricing

    user = factory.SubFactory("payments_project.accounts.tests.factories.UserFactory")
    country = "US"
    source = CustomerPricing.Source.PROXY_HEADER
