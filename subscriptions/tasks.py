"""Scheduled jobs of subscriptions: finish Stripe changes whose answer was never applied."""

from __future__ import annotations

from celery import shared_task

from subscriptions.services import subscription_stripe_calls_sweep


@shared_task
def stripe_calls_sweep_task() -> int:
    """Beat job (every minute): finish subscription changes Stripe answered but we never applied,
    or that Stripe did not answer (sent again under the same idempotency key)."""
    return subscription_stripe_calls_sweep()
