from __future__ import annotations

from datetime import UTC, datetime, timedelta

import factory

from billing.catalog.tests.factories import PlanFactory
from payments_project.accounts.tests.factories import UserFactory
from subscriptions.models import Family, FamilyInvitation, FamilyMember, Subscription, SubscriptionHistory

PERIOD_START = datetime(2027, 1, 1, tzinfo=UTC)


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subscription

    user = factory.SubFactory(UserFactory)
    plan = factory.SubFactory(PlanFactory)
    status = Subscription.Status.ACTIVE
    current_period_start = PERIOD_START
    current_period_end = PERIOD_START + timedelta(days=31)
    stripe_subscription_id = factory.Sequence(lambda n: f"sub_test{n:06d}")
    currency = "USD"
    amount = 999


class SubscriptionHistoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SubscriptionHistory

    subscription = factory.SubFactory(SubscriptionFactory)
    from_status = Subscription.Status.INCOMPLETE
    to_status = Subscription.Status.ACTIVE
    cause = SubscriptionHistory.Cause.WEBHOOK


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


class FamilyInvitationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FamilyInvitation

    family = factory.SubFactory(FamilyFactory)
    invited_by = factory.LazyAttribute(lambda i: i.family.owner)
    invitee_user_id = None
    invitee_email = "invitee@example.com"
    expires_at = factory.LazyFunction(lambda: datetime.now(UTC) + timedelta(days=7))
