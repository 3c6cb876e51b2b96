from __future__ import annotations

from datetime import UTC, datetime, timedelta

import factory

from subscriptions.dunning.models import DeclineRule, DunningAttempt, DunningCase, DunningEmail, DunningPolicy
from subscriptions.tests.factories import SubscriptionFactory

OPENED_AT = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)


class DunningPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DunningPolicy

    plan = factory.SubFactory("billing.catalog.tests.factories.PlanFactory")
    name = factory.Sequence(lambda n: f"policy {n}")
    retry_offsets_days = factory.LazyFunction(lambda: [1, 3, 5, 7])
    past_due_access = DunningPolicy.Access.FULL
    suspend_after_failed_retries = 3
    cancel_after_days = 14


class DeclineRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DeclineRule

    decline_code = factory.Sequence(lambda n: f"test_decline_{n}")
    action = DeclineRule.Action.NEVER


class DunningCaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DunningCase

    subscription = factory.SubFactory(SubscriptionFactory, status="past_due")
    policy = factory.LazyAttribute(
        lambda c: DunningPolicy.objects.get_or_create(
            is_default=True, defaults={"name": "Default", "retry_offsets_days": [1, 3, 5, 7]}
        )[0]
    )
    stripe_invoice_id = factory.Sequence(lambda n: f"in_test{n:06d}")
    stripe_customer_id = factory.Sequence(lambda n: f"cus_test{n:06d}")
    amount_due = 999
    currency = "USD"
    opened_at = OPENED_AT
    cancel_at = OPENED_AT + timedelta(days=14)


class DunningAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DunningAttempt

    case = factory.SubFactory(DunningCaseFactory)
    number = factory.Sequence(lambda n: n + 1)
    due_at = OPENED_AT + timedelta(days=1)
    idempotency_key = factory.LazyAttribute(lambda a: f"dunning:{a.case.stripe_invoice_id}:{a.number}")


class DunningEmailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DunningEmail

    case = factory.SubFactory(DunningCaseFactory)
    step = DunningEmail.Step.PAYMENT_FAILED
    to = "customer@example.com"
    subject = "Your payment failed"
