"""Processing of inbound Stripe events on Celery."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from billing.stripe.publisher import PROCESS_BATCH_TASK
from billing.stripe.services import (
    MAX_RETRIES,
    PROCESS_TASK,
    StripeEventFailed,
    retry_delay,
    stripe_event_give_up,
    stripe_event_process,
    stripe_events_sweep,
)

logger = logging.getLogger(__name__)


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


@shared_task(name=PROCESS_BATCH_TASK, acks_late=True)
def stripe_events_process_batch_task(stripe_event_pks: list[int]) -> None:
    """Process inbox rows queued together by a web process (billing.stripe.publisher), one after
    the other, each as stripe_event_process_task would; one that fails goes on with that task's
    retries, from its first back-off, instead of holding up the others."""
    for pk in stripe_event_pks:
        try:
            stripe_event_process(stripe_event_pk=pk)
        except StripeEventFailed:
            try:
                # As if this task had failed once: `retries` is Celery's option (not in the stubs).
                stripe_event_process_task.apply_async(  # type: ignore[call-arg]
                    (pk,), countdown=retry_delay(0).total_seconds(), retries=1
                )
            except Exception:
                # The row stays "failed": the sweep queues it again.
                logger.warning("could not queue the retry of Stripe event %s", pk, exc_info=True)


@shared_task
def stripe_events_sweep_task() -> int:
    """Beat job (every minute): queue inbox rows that would otherwise wait forever."""
    return stripe_events_sweep()
