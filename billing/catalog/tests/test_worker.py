"""One task through a real Celery worker process on Redis (every other test runs tasks eagerly)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from billing.catalog.services import catalog_load
from billing.catalog.tasks import catalog_push
from billing.models import StripePrice
from devtools.testing import StandinServer
from payments_project.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_catalog_push_runs_in_a_real_worker(stripe_standin: StandinServer) -> None:
    # given a committed catalog and a worker on the Redis broker, using the test database
    catalog_load(data={"plans": [{"code": "solo", "prices": {"USD": 500, "JPY": 700}}]})
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "STRIPE_API_BASE": stripe_standin.url,
    }
    celery_app.conf.task_always_eager = False
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "payments_project",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        # when the task is published to Redis
        celery_app.control.purge()  # nothing left over from another run
        catalog_push.delay()

        # then the worker consumes it and the prices appear in our database
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and StripePrice.objects.count() < 2:
            time.sleep(0.2)
        assert sorted(StripePrice.objects.values_list("currency", "amount")) == [("JPY", 700), ("USD", 500)]
    finally:
        celery_app.conf.task_always_eager = True
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=15)
