from __future__ import annotations

from datetime import UTC, datetime, timedelta

import factory

from billing.metering.models import MeterReconciliation, MeterReconciliationLine, MeterReport, StripeMeter
from billing.metering.services import meter_identifier

WINDOW_START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


class StripeMeterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StripeMeter

    event_name = factory.Sequence(lambda n: f"meter_{n}")
    stripe_meter_id = factory.Sequence(lambda n: f"mtr_test_{n:024d}")


class MeterReportFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MeterReport

    stripe_customer_id = factory.Sequence(lambda n: f"cus_test{n:08d}")
    event_name = "api_calls"
    window_start = WINDOW_START
    window_end = factory.LazyAttribute(lambda r: r.window_start + timedelta(hours=1))
    value = 10
    identifier = factory.LazyAttribute(
        lambda r: meter_identifier(
            stripe_customer_id=r.stripe_customer_id, event_name=r.event_name, window_start=r.window_start
        )
    )


class MeterReconciliationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MeterReconciliation

    start = WINDOW_START
    end = factory.LazyAttribute(lambda r: r.start + timedelta(days=1))


class MeterReconciliationLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MeterReconciliationLine

    reconciliation = factory.SubFactory(MeterReconciliationFactory)
    stripe_customer_id = factory.Sequence(lambda n: f"cus_test{n:08d}")
    event_name = "api_calls"
    ours = 10
    stripe = 10
    difference = 0
