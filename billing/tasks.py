"""Celery looks for `<app>.tasks`: the billing app's tasks live in its sub-packages."""

from billing.catalog import tasks as catalog_tasks
from billing.metering import tasks as metering_tasks
from billing.payments import tasks as payments_tasks
from billing.stripe import tasks as stripe_tasks

__all__ = ["catalog_tasks", "metering_tasks", "payments_tasks", "stripe_tasks"]
