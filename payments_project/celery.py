"""The Celery app: worker and beat share Django's settings (CELERY_* names)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import before_task_publish, task_prerun

from payments_project.observability import celery_bind_request_id, celery_publish_request_id

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "payments_project.settings")

app = Celery("payments_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

before_task_publish.connect(celery_publish_request_id, weak=False)
task_prerun.connect(celery_bind_request_id, weak=False)


def ensure_broker_folders() -> None:
    """The filesystem broker fails on a missing folder: create them before any worker or publish."""
    from django.conf import settings

    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder", "bad_folder"):
        if key in options:
            os.makedirs(str(options[key]), exist_ok=True)


@app.on_after_configure.connect
def _create_broker_folders(sender: Celery, **_: object) -> None:
    ensure_broker_folders()
