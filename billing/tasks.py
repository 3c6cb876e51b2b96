from __future__ import annotations

from typing import Any

from celery import shared_task

from billing.services import catalog_push_to_stripe
from billing.services.refunds import refunds_resubmit
from billing.services.webhooks import (
    WebhookProcessingFailed,
    webhook_event_give_up,
    webhook_event_process,
    webhook_events_sweep,
)


@shared_task(autoretry_for=(Exception,), retry_backoff=True, retry_backoff_max=600, max_retries=5)
def catalog_push() -> int:
    """Beat job: create any Stripe price the catalog needs but Stripe lacks (e.g. after a staff
    edit of a zone's multiplier). Idempotent: existing prices are skipped."""
    return catalog_push_to_stripe()


@shared_task(bind=True, max_retries=8, acks_late=True)
def webhook_event_process_task(self: Any, webhook_event_id: int) -> None:
    """Process one inbox row; on failure retry with exponential backoff (10 s ... ~20 min)."""
    try:
        webhook_event_process(webhook_event_id=webhook_event_id)
    except WebhookProcessingFailed as exc:
        if self.request.retries >= self.max_retries:
            webhook_event_give_up(webhook_event_id=webhook_event_id)
            return
        if self.app.conf.task_always_eager:
            return  # eager runs (tests, scripts): the row stays "failed" for reprocess/redelivery
        raise self.retry(exc=exc, countdown=10 * 2**self.request.retries) from exc


@shared_task
def webhook_events_sweep_task() -> int:
    """Beat job (every minute): queue inbox rows that would otherwise wait forever."""
    return webhook_events_sweep()


@shared_task
def refunds_resubmit_task() -> int:
    """Beat job (every 5 minutes): send again refunds whose Stripe answer never came."""
    return refunds_resubmit()
