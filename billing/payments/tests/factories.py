from __future__ import annotations

import factory

from billing.payments.models import Payment, Refund
from payments_project.accounts.tests.factories import UserFactory


class PaymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payment

    user = factory.SubFactory(UserFactory)
    amount = 1500
    currency = "EUR"
    status = Payment.Status.SUCCEEDED
    idempotency_key = factory.Sequence(lambda n: f"test-key-{n}")
    stripe_payment_intent_id = factory.Sequence(lambda n: f"pi_test{n:06d}")


class RefundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Refund

    payment = factory.SubFactory(PaymentFactory)
    amount = 500
    currency = factory.LazyAttribute(lambda r: r.payment.currency)
    status = Refund.Status.SUCCEEDED
