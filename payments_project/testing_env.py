"""Loaded by pytest (`-p` in pytest.ini) before Django reads its settings: the test defaults.

Tests run against the real PostgreSQL and Redis on 127.0.0.1 unless DATABASE_URL / REDIS_URL say
otherwise; conftest.py refuses SQLite and local-memory caches.
"""

import os

os.environ.setdefault("APP_ENV", "test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/payments")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("STRIPE_STANDIN_PORT", "18420")
os.environ.setdefault("LOG_FORMAT", "plain")
