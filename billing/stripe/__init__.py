"""Stripe at the edge: the gateway every Stripe call goes through (timeout, retries, idempotency keys,
circuit breaker) and the inbound event inbox (signed endpoint, one row per event id, processing on
Celery). Handlers of the events live with the concept they change (payments, subscriptions)."""
