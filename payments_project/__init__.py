"""The project: settings, URLs, the API foundation, authentication, health, metrics, logs and the
Celery app; `accounts/` holds the project-wide roles, permission and audit log, `events/` the
domain events outbox and its relay, `backoffice/` the staff pages that span the domain apps."""

from payments_project.celery import app as celery_app

__all__ = ["celery_app"]
