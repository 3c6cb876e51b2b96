from __future__ import annotations

import factory
from django.utils import timezone

from entitlements.periods import EPOCH
from payments_project.accounts.tests.factories import UserFactory
from usage.models import UsageAdjustment, UsageCounter, UsageRecord, UsageReservation, UsageThreshold


class UsageRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageRecord

    user = factory.SubFactory(UserFactory)
    subject = factory.LazyAttribute(lambda r: f"u{r.user.pk}")
    feature_code = "api_calls"
    quantity = 1
    idempotency_key = factory.Sequence(lambda n: f"key-{n}")
    fingerprint = "0" * 64
    occurred_at = factory.LazyFunction(timezone.now)
    recorded_at = factory.LazyFunction(timezone.now)
    period_start = EPOCH


class UsageCounterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageCounter

    user = factory.SubFactory(UserFactory)
    subject = factory.LazyAttribute(lambda c: f"u{c.user.pk}")
    feature_code = "api_calls"
    period_start = EPOCH
    limit = 100


class UsageAdjustmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageAdjustment

    user = factory.SubFactory(UserFactory)
    subject = factory.LazyAttribute(lambda a: f"u{a.user.pk}")
    feature_code = "api_calls"
    period_start = EPOCH
    quantity = 1
    reason = "correction"


class UsageReservationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageReservation

    user = factory.SubFactory(UserFactory)
    subject = factory.LazyAttribute(lambda r: f"u{r.user.pk}")
    feature_code = "api_calls"
    period_start = EPOCH
    quantity = 1
    idempotency_key = factory.Sequence(lambda n: f"hold-{n}")
    expires_at = factory.LazyFunction(timezone.now)
    created_at = factory.LazyFunction(timezone.now)


class UsageThresholdFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageThreshold

    subject = "u1"
    feature_code = "api_calls"
    period_start = EPOCH
    level = UsageThreshold.Level.WARNING
    limit = 100
    used = 80
    created_at = factory.LazyFunction(timezone.now)
