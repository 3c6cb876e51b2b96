"""The production server settings (payments_project/gunicorn_conf.py), as gunicorn reads them."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from payments_project import gunicorn_conf

ROOT = Path(__file__).resolve().parents[2]


def test_gunicorn_accepts_the_config_and_the_app() -> None:
    # given the command the Dockerfile runs, with the production-like variables of the test env
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--check-config",
        "-c",
        "payments_project/gunicorn_conf.py",
        "payments_project.wsgi:application",
    ]

    # when gunicorn only checks it
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)

    # then
    assert done.returncode == 0, done.stderr


def test_a_worker_freezes_what_it_imported_after_loading_the_app() -> None:
    # given a collector with nothing frozen
    gc.unfreeze()
    try:
        # when a worker has loaded the app
        gunicorn_conf.post_worker_init(worker=None)

        # then every object alive at that point is out of the collector's generations
        assert gc.get_freeze_count() > 0
        assert gc.get_count()[2] == 0
    finally:
        gc.unfreeze()


def test_the_defaults_are_one_gthread_worker_per_core_with_keep_alive() -> None:
    assert gunicorn_conf.worker_class == "gthread"
    assert gunicorn_conf.workers == int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
    assert gunicorn_conf.threads == int(os.environ.get("GUNICORN_THREADS", "4"))
    assert gunicorn_conf.keepalive == int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
