"""Loaded into the bench's Celery workers (`celery worker --include webhook_effects`): counts each
time an event's processing takes effect, in the processing's own transaction (an attempt that is
rolled back, or killed, leaves no row), so bench/webhooks.py can tell lost and doubled events."""

from __future__ import annotations

from typing import Any

from django.db import connection

from billing.stripe.handlers import stripe_event_handler

TABLE = "bench_webhook_effects"


@stripe_event_handler("balance.available")
def count_effect(event: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {TABLE} (event_id, at) VALUES (%s, clock_timestamp())", [event.id])  # noqa: S608 - constant table
