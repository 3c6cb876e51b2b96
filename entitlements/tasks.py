"""Beat jobs of the entitlements app."""

from __future__ import annotations

from celery import shared_task

from entitlements.services import snapshot_invalidations_retry


@shared_task
def snapshot_invalidations_retry_task() -> int:
    """Beat job (every ENTITLEMENTS_INVALIDATION_RETRY_SECONDS): snapshot drops Redis missed."""
    return snapshot_invalidations_retry()
