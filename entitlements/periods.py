"""Quota periods: which period an instant falls in, for a limit's reset rule.

Owned here (the entitlement carries the reset rule and its subscription the anchor) so that both an
entitlement check and the usage app (which builds on entitlements) compute the same boundaries.
A period is found from its anchor by arithmetic, never by a job: the counter of a new period is
simply another row keyed by its start.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

# The one period of a limit that never resets.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _add_months(anchor: datetime, months: int) -> datetime:
    """The anchor moved by whole months, its day clamped to the month's length (Jan 31 + 1: Feb 28/29)."""
    years, month0 = divmod(anchor.month - 1 + months, 12)
    year, month = anchor.year + years, month0 + 1
    return anchor.replace(year=year, month=month, day=min(anchor.day, calendar.monthrange(year, month)[1]))


def _months(reset_period: str, interval: str, interval_count: int) -> int | None:
    if reset_period == "month":
        return 1
    if reset_period == "billing_period":
        if interval == "month":
            return max(1, interval_count)
        if interval == "year":
            return 12 * max(1, interval_count)
    return None


def period_bounds(
    *,
    reset_period: str,
    anchor: datetime | None,
    interval: str = "month",
    interval_count: int = 1,
    at: datetime,
) -> tuple[datetime, datetime | None]:
    """[start, end) of the period holding `at`; end None: the limit never resets.

    `anchor`: the start of a known period (the subscription's current period start), from which
    the others are counted in whole steps. Months are added to the anchor, not to the previous
    boundary, so a period anchored on the 31st ends on Feb 28 (or 29) and the next on Mar 31.
    """
    if reset_period == "day":
        start = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    months = _months(reset_period, interval, interval_count)
    if months is None or anchor is None:
        return EPOCH, None
    anchor = anchor.astimezone(UTC)
    steps = ((at.year - anchor.year) * 12 + (at.month - anchor.month)) // months
    start = _add_months(anchor, steps * months)
    while start > at:
        steps -= 1
        start = _add_months(anchor, steps * months)
    end = _add_months(anchor, (steps + 1) * months)
    while end <= at:
        steps += 1
        start, end = end, _add_months(anchor, (steps + 1) * months)
    return start, end
