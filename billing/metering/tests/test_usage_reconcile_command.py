"""`manage.py usage_reconcile --period YYYY-MM` against the Stripe stand-in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from billing.management.commands.usage_reconcile import period_bounds
from billing.metering.models import MeterReconciliation
from billing.metering.services import (
    meter_report_record,
    meter_report_send,
    meter_window,
    stripe_meter_ensure,
)
from billing.stripe import gateway as stripe_gateway

HOUR = timedelta(hours=1)


def _run(period: str) -> str:
    out = StringIO()
    call_command("usage_reconcile", period=period, stdout=out)
    return out.getvalue()


def _window(hours_ago: int) -> datetime:
    start, _ = meter_window(at=datetime.now(UTC))
    return start - hours_ago * HOUR


def _report(customer: str, start: datetime, value: int) -> int:
    return meter_report_record(
        stripe_customer_id=customer,
        event_name="api_calls",
        window_start=start,
        window_end=start + HOUR,
        value=value,
    ).pk


@pytest.fixture
def customers(stripe_standin: Any, settings: Any) -> tuple[str, str]:
    # These compare what was reported with Stripe (the usage ledger's side: usage/tests/test_metering.py).
    settings.METERING_USAGE_TOTALS = "billing.metering.selectors.meter_reported_totals"
    stripe_meter_ensure(event_name="api_calls")
    client = stripe_gateway.client()
    return str(client.v1.customers.create({}).id), str(client.v1.customers.create({}).id)


@pytest.mark.django_db
def test_a_clean_month_prints_zero_differences(customers: tuple[str, str]) -> None:
    # given two customers' reports, all sent
    ada, bob = customers
    start = _window(2)
    for pk in (_report(ada, start, 7), _report(bob, start, 3)):
        meter_report_send(report_id=pk)
    # when
    out = _run(f"{start + HOUR:%Y-%m}")
    # then
    assert out.splitlines()[-1] == "0 differences"
    assert "2 customer/meter lines" in out.splitlines()[0]
    assert MeterReconciliation.objects.get().differences == 0


@pytest.mark.django_db
def test_a_report_stripe_lacks_is_printed_with_its_difference(customers: tuple[str, str]) -> None:
    # given bob's report never sent
    ada, bob = customers
    start = _window(2)
    meter_report_send(report_id=_report(ada, start, 7))
    _report(bob, start, 3)
    # when
    out = _run(f"{start + HOUR:%Y-%m}")
    # then
    assert out.splitlines()[1:] == [f"  {bob} api_calls: ours 3, stripe 0, difference -3", "1 differences"]


@pytest.mark.parametrize("period", ["2026-13", "2026-1", "26-01", "2026-01-01", "2026\x0001"])
def test_a_malformed_period_is_refused(period: str) -> None:
    with pytest.raises(CommandError, match="--period must be YYYY-MM"):
        _run(period)


def test_period_bounds_cover_the_month_and_stop_at_the_current_minute() -> None:
    now = datetime(2028, 2, 29, 12, 30, 45, tzinfo=UTC)
    assert period_bounds("2028-01", now=now) == (
        datetime(2028, 1, 1, tzinfo=UTC),
        datetime(2028, 2, 1, tzinfo=UTC),
    )
    assert period_bounds("2027-12", now=now) == (
        datetime(2027, 12, 1, tzinfo=UTC),
        datetime(2028, 1, 1, tzinfo=UTC),
    )
    assert period_bounds("2028-02", now=now) == (
        datetime(2028, 2, 1, tzinfo=UTC),
        datetime(2028, 2, 29, 12, 30, tzinfo=UTC),
    )
    with pytest.raises(CommandError, match="2028-03 has not started yet"):
        period_bounds("2028-03", now=now)


def ledger_totals(*, start: datetime, end: datetime) -> dict[tuple[str, str], int]:
    """Stands for the usage ledger the integrator plugs in through METERING_USAGE_TOTALS."""
    return {(LEDGER_CUSTOMER[0], "api_calls"): 10}


LEDGER_CUSTOMER: list[str] = []


@pytest.mark.django_db
def test_our_totals_come_from_the_function_the_setting_names(
    customers: tuple[str, str], settings: Any
) -> None:
    # given the ledger counts 10 for ada, and 7 were reported and sent
    ada, _ = customers
    LEDGER_CUSTOMER[:] = [ada]
    settings.METERING_USAGE_TOTALS = f"{__name__}.ledger_totals"
    start = _window(2)
    meter_report_send(report_id=_report(ada, start, 7))
    # when
    out = _run(f"{start + HOUR:%Y-%m}")
    # then
    assert out.splitlines()[1:] == [f"  {ada} api_calls: ours 10, stripe 7, difference -3", "1 differences"]
