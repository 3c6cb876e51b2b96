"""Reads of metered billing: what we reported, and the last reconciliation."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Sum

from billing.metering.models import MeterReconciliation, MeterReport


def meter_reported_totals(*, start: datetime, end: datetime) -> dict[tuple[str, str], int]:
    """{(stripe_customer_id, event_name): total} of our reports whose meter event falls in
    [start, end) (its timestamp is the last second of the window), whatever their status: a
    report Stripe lacks (pending or refused) then shows as a difference."""
    rows = (
        MeterReport.objects.filter(window_end__gt=start, window_end__lte=end)
        .values_list("stripe_customer_id", "event_name")
        .annotate(total=Sum("value"))
        .order_by()
    )
    return {(customer, event_name): int(total) for customer, event_name, total in rows}


def meter_reconciliation_last() -> MeterReconciliation | None:
    return MeterReconciliation.objects.prefetch_related("lines").order_by("-created_at", "-pk").first()
