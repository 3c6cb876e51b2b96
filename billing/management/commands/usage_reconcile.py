"""`manage.py usage_reconcile --period YYYY-MM`: our usage totals per customer and meter against
Stripe's meter event summaries for one calendar month (UTC); prints the differences and stores the
result (the admin shows the last one).

Our totals come from the function named by METERING_USAGE_TOTALS (a dotted path taking keyword
`start` and `end`, returning {(stripe_customer_id, event_name): total}); by default what we
reported to Stripe (billing.metering.selectors.meter_reported_totals).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.module_loading import import_string

from billing.metering.services import meter_reconcile
from payments_project.errors import DomainError

PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
OursTotals = Callable[..., Mapping[tuple[str, str], int]]


def period_bounds(period: str, *, now: datetime) -> tuple[datetime, datetime]:
    """[first instant of the month, first of the next month) in UTC; a month still running ends at
    the current minute (Stripe's summaries take minute-aligned times)."""
    match = PERIOD.match(period)
    if match is None:
        raise CommandError(f"--period must be YYYY-MM, got {period!r}")
    year, month = int(match[1]), int(match[2])
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    current_minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    if start >= current_minute:
        raise CommandError(f"{period} has not started yet")
    return start, min(end, current_minute)


def ours_totals() -> OursTotals:
    totals: OursTotals = import_string(settings.METERING_USAGE_TOTALS)
    return totals


class Command(BaseCommand):
    help = "Compare our usage totals per customer and meter with Stripe's meter event summaries."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--period", required=True, help="A calendar month, UTC: YYYY-MM")

    def handle(self, *args: Any, **options: Any) -> None:
        start, end = period_bounds(options["period"], now=timezone.now())
        ours = ours_totals()(start=start, end=end)
        try:
            result = meter_reconcile(start=start, end=end, ours=ours)
        except DomainError as exc:
            raise CommandError(f"reconciliation failed: {exc.message}") from exc
        self.stdout.write(
            f"usage_reconcile {options['period']}: {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, "
            f"{result.lines_count} customer/meter lines"
        )
        for line in result.lines.exclude(difference=0).order_by("event_name", "stripe_customer_id"):
            stripe = "no meter" if line.stripe is None else str(line.stripe)
            self.stdout.write(
                f"  {line.stripe_customer_id} {line.event_name}: ours {line.ours}, stripe {stripe}, "
                f"difference {line.difference:+d}"
            )
        self.stdout.write(f"{result.differences} differences")
