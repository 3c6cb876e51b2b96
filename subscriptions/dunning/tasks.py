"""Celery tasks of dunning: each takes ids and calls one service; all are safe to run twice."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from payments_project.errors import ServiceUnavailable
from subscriptions.dunning import services


@shared_task
def dunning_sweep_task() -> int:
    """Beat job (every 2 minutes): claim the due retries and cancellations, queue their tasks."""
    result = services.dunning_sweep()
    services.dunning_cases_open_by_stage()
    return result.claimed


@shared_task(name=services.RETRY_TASK, acks_late=True)
def dunning_attempt_run_task(attempt_id: int) -> str:
    """One retry. Stripe down: the service makes it due again later (no Celery retry needed)."""
    return services.dunning_attempt_run(attempt_id=attempt_id)


@shared_task(name=services.CANCEL_TASK, bind=True, max_retries=5, acks_late=True)
def dunning_case_cancel_task(self: Any, case_id: int) -> str:
    try:
        return services.dunning_case_cancel(case_id=case_id)
    except ServiceUnavailable as exc:
        if self.app.conf.task_always_eager or self.request.retries >= self.max_retries:
            return "stripe_unavailable"  # the claim expires and the sweep queues it again
        raise self.retry(exc=exc, countdown=30 * 2**self.request.retries) from exc


@shared_task(name=services.EMAIL_TASK, bind=True, max_retries=5, acks_late=True)
def dunning_email_send_task(self: Any, email_id: int) -> bool:
    return services.dunning_email_send(email_id=email_id)


@shared_task(name=services.INVOICE_END_TASK, acks_late=True)
def dunning_invoice_end_task(case_id: int) -> str:
    """Void a stopped case's invoice. Stripe down: the case keeps its pending end and the sweep
    asks again a few minutes later, for as long as it takes (no Celery retries to run out)."""
    try:
        return services.dunning_invoice_end(case_id=case_id)
    except ServiceUnavailable:
        return "stripe_unavailable"


@shared_task(name=services.DECLINE_LOOKUP_TASK, acks_late=True)
def dunning_decline_fetch_task(case_id: int) -> str:
    """Read a failed renewal's card codes from Stripe and decide its retries (the sweep asks again
    if Stripe is down)."""
    return services.dunning_decline_fetch(case_id=case_id)
