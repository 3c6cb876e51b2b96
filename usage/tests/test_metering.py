"""Metered usage handed to Stripe: one meter report per (customer, meter, closed window), from the
ledger, and a reconciliation of the ledger with Stripe's summaries that finds no drift."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.metering.models import MeterReport
from billing.metering.services import meter_report_send, meter_window, stripe_meter_ensure
from billing.models import Feature
from billing.payments.services.payments import customer_ensure
from usage.models import UsageMeterCursor
from usage.services import UsageEvent, usage_event_record, usage_events_record, usage_meter_windows_report

pytestmark = pytest.mark.django_db


def _event(user: Any, key: str, quantity: int) -> UsageEvent:
    return UsageEvent(user_id=user.pk, feature="api_calls", idempotency_key=key, quantity=quantity)


def test_closed_windows_reach_stripe_once_and_reconcile_with_no_drift(
    quota: Callable[..., Any], stripe_standin: Any, settings: Any
) -> None:
    # given a feature billed per unit through the `api_calls` meter, one-minute windows, and a
    # customer (Stripe customer) and a family owner whose pool a member spent
    settings.METERING_WINDOW_SECONDS = 60
    now = timezone.now()
    at = now - timedelta(minutes=10)
    if (at + timedelta(minutes=1)).month != at.month:
        # The events span two minutes: both in the one month the reconciliation below reads.
        at -= timedelta(minutes=2)
    ada = quota("api_calls", limit=None, period_start=at - timedelta(days=1))
    owner = quota("api_calls", limit=None, period_start=at - timedelta(days=1), family=True)
    Feature.objects.filter(code="api_calls").update(meter_event_name="api_calls")
    stripe_meter_ensure(event_name="api_calls")
    ada_customer, owner_customer = customer_ensure(user=ada), customer_ensure(user=owner)
    usage_events_record(events=[_event(ada, "k1", 5), _event(ada, "k2", 7)], now=at)
    usage_event_record(event=_event(ada, "k3", 4), now=at + timedelta(minutes=1))
    usage_event_record(event=_event(owner, "f1", 9), now=at)

    # when the job runs twice (a second beat, or a rerun after a crash)
    first = usage_meter_windows_report(now=now)
    second = usage_meter_windows_report(now=now)

    # then every window up to the last closed one is done once; one report per customer and window
    closed_until, _ = meter_window(at=now - timedelta(minutes=2))
    assert second == 0 and first == int((closed_until - meter_window(at=at)[0]).total_seconds() // 60)
    assert UsageMeterCursor.objects.get().reported_until == closed_until
    reports = list(MeterReport.objects.order_by("window_start", "stripe_customer_id"))
    expected = sorted(
        [
            (meter_window(at=at)[0], ada_customer, 12),
            (meter_window(at=at)[0], owner_customer, 9),
            (meter_window(at=at + timedelta(minutes=1))[0], ada_customer, 4),
        ]
    )
    assert [(r.window_start, r.stripe_customer_id, r.value) for r in reports] == expected
    assert {r.event_name for r in reports} == {"api_calls"}

    # and once sent, the ledger and Stripe's summaries agree
    for report in reports:
        meter_report_send(report_id=report.pk)
    out = StringIO()
    call_command("usage_reconcile", period=f"{at:%Y-%m}", stdout=out)
    assert out.getvalue().splitlines()[-1] == "0 differences"


def test_a_closed_window_not_yet_reported_shows_as_drift(
    quota: Callable[..., Any], stripe_standin: Any, settings: Any
) -> None:
    # given units recorded in a window that is closed but that the job has not handed over
    settings.METERING_WINDOW_SECONDS = 60
    at = timezone.now() - timedelta(minutes=10)
    ada = quota("api_calls", limit=None, period_start=at - timedelta(days=1))
    Feature.objects.filter(code="api_calls").update(meter_event_name="api_calls")
    stripe_meter_ensure(event_name="api_calls")
    customer = customer_ensure(user=ada)
    usage_event_record(event=_event(ada, "k1", 6), now=at)

    # when the reconciliation runs
    out = StringIO()
    call_command("usage_reconcile", period=f"{at:%Y-%m}", stdout=out)

    # then the ledger's 6 units are missing at Stripe
    assert out.getvalue().splitlines()[1:] == [
        f"  {customer} api_calls: ours 6, stripe 0, difference -6",
        "1 differences",
    ]
