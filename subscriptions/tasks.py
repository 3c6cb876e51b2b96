"""Celery tasks of the subscriptions app: finishing Stripe changes, settling duplicates, asking
Stripe about overdue periods."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from payments_project.errors import ServiceUnavailable
from subscriptions.services import (
    DUPLICATE_SETTLE_TASK,
    subscription_duplicate_settle,
    subscription_duplicates_settle_sweep,
    subscription_stripe_calls_sweep,
    subscriptions_reconcile_overdue,
)


@shared_task(name=DUPLICATE_SETTLE_TASK, bind=True, max_retries=8, acks_late=True)
def subscription_duplicate_settle_task(self: Any, subscription_id: int) -> None:
    """Cancel and refund a duplicate subscription at Stripe; Stripe down: retried with back-off."""
    try:
        subscription_duplicate_settle(subscription_id=subscription_id)
    except ServiceUnavailable as exc:
        if self.app.conf.task_always_eager or self.request.retries >= self.max_retries:
            return  # the beat job queues it again
        raise self.retry(exc=exc, countdown=10 * 2**self.request.retries) from exc


@shared_task
def subscription_duplicates_settle_sweep_task() -> int:
    """Beat job (every 5 minutes): duplicates whose settling was lost or gave up."""
    return subscription_duplicates_settle_sweep()


@shared_task
def subscriptions_reconcile_overdue_task() -> int:
    """Beat job (every 10 minutes): periods that ended without a Stripe event, asked of Stripe."""
    return subscriptions_reconcile_overdue()


@shared_task
def stripe_calls_sweep_task() -> int:
    """Beat job (every minute): finish subscription changes Stripe answered but we never applied,
    or that Stripe did not answer (sent again under the same idempotency key)."""
    return subscription_stripe_calls_sweep()
