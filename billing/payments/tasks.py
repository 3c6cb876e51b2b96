"""Scheduled jobs of payments."""

from __future__ import annotations

from celery import shared_task

from billing.payments.services import refunds_resubmit


@shared_task
def refunds_resubmit_task() -> int:
    """Beat job (every 5 minutes): send again refunds whose Stripe answer never came."""
    return refunds_resubmit()
