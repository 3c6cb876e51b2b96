"""Scheduled jobs of metered billing."""

from __future__ import annotations

from celery import shared_task

from billing.metering.services import meter_report_send, meter_reports_send_pending
from billing.stripe.gateway import StripeUnavailable


@shared_task(acks_late=True)
def meter_report_send_task(report_id: int) -> None:
    """Send one report after its window was recorded; if Stripe is down the beat job sends it later."""
    try:
        meter_report_send(report_id=report_id)
    except StripeUnavailable:
        return


@shared_task
def meter_reports_send_task() -> int:
    """Beat job: send every pending meter report. Idempotent (a report's identifier never changes)."""
    return meter_reports_send_pending()
