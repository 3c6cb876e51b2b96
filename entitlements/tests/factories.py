from __future__ import annotations

from datetime import timedelta

import factory
from django.utils import timezone

from billing.tests.factories import PlanFactory, UserFactory
from entitlements.models import Entitlement, Family, FamilyMember
from subscriptions.models import Subscription


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subscription

    user = factory.SubFactory(UserFactory)
    plan = factory.SubFactory(PlanFactory)
    status = Subscription.Status.ACTIVE
    current_period_start = factory.LazyFunction(timezone.now)
    current_period_end = factory.LazyAttribute(lambda s: s.current_period_start + timedelta(days=30))


class FamilyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Family
        skip_postgeneration_save = True

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"family {n}")

    @factory.post_generation
    def owner_member(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            FamilyMember.objects.create(family_id=self.pk, user_id=self.owner.pk)


class EntitlementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Entitlement

    user = factory.SubFactory(UserFactory)
    feature = factory.SubFactory("billing.tests.factories.FeatureFactory")
    source = Entitlement.Source.MANUAL
    status = Entitlement.Status.ACTIVE
    granted_at = factory.LazyFunction(timezone.now)
