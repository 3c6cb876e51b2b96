from __future__ import annotations

from celery import shared_task

from usage.services import usage_meter_windows_report, usage_reservations_expire


@shared_task
def usage_reservations_expire_task() -> int:
    """Beat: release the reservations whose TTL passed (idempotent: only held ones are closed)."""
    return usage_reservations_expire()


@shared_task
def usage_meter_windows_report_task() -> int:
    """Beat: closed windows of metered usage handed to Stripe (idempotent per window)."""
    return usage_meter_windows_report()
