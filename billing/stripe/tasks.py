"""Processing of inbound Stripe events on Celery."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from billing.stripe.services import (
    MAX_RETRIES,
    PROCESS_TASK,
    StripeEventFailed,
    retry_delay,
    stripe_event_give_up,
    stripe_event_process,
    stripe_events_sweep,
)


@shared_task(name=PROCESS_TASK, bind=True, max_retries=MAX_RETRIES, acks_late=True)
def stripe_event_process_task(self: Any, stripe_event_pk: int) -> None:
    """Process one inbox row; on failure retry with exponential backoff (10 s ... ~20 min)."""
    try:
        stripe_event_process(stripe_event_pk=stripe_event_pk)
    except StripeEventFailed as exc:
        if self.request.retries >= self.max_retries:
            stripe_event_give_up(stripe_event_pk=stripe_event_pk)
            return
        if self.app.conf.task_always_eager:
            return  # eager runs (tests, scripts): the row stays "failed" for reprocess/redelivery
        countdown = retry_delay(self.request.retries).total_seconds()
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task
def stripe_events_sweep_task() -> int:
    """Beat job (every minute): queue inbox rows that would otherwise wait forever."""
    return stripe_events_sweep()
