"""Scheduled jobs of the catalog."""

from __future__ import annotations

from celery import shared_task

from billing.catalog.services import catalog_push_to_stripe


@shared_task(autoretry_for=(Exception,), retry_backoff=True, retry_backoff_max=600, max_retries=5)
def catalog_push() -> int:
    """Beat job: create any Stripe price the catalog needs but Stripe lacks (e.g. after a staff
    edit of a zone's multiplier). Idempotent: existing prices are skipped."""
    return catalog_push_to_stripe()
