"""gunicorn settings for production (the Dockerfile's command) and bench/entitlements.py:

    gunicorn -c payments_project/gunicorn_conf.py payments_project.wsgi:application

Environment variables override the defaults.

- One worker per core (WEB_CONCURRENCY), gthread with a few threads so a worker keeps connections
  alive (a sync worker closes each one) and overlaps its Redis/PostgreSQL waits.
- Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new connections over
  the workers; on one shared socket a worker often accepted 14 of 16 keep-alive connections and
  queued them behind its threads while the other idled (seen in bench/entitlements.py). The cost:
  connections waiting in a dying worker's queue are reset (clients retry), as with any reuseport.
- After a worker has loaded the app, everything it imported is moved out of the garbage
  collector's reach (`gc.freeze()`): a full collection otherwise walks Django's whole import graph
  every few thousand requests, a pause of tens of milliseconds that was most of the entitlement
  check's p99 in bench/entitlements.py. Objects created per request are collected as usual.
"""

from __future__ import annotations

import gc
import os
from typing import Any


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default  # unset or empty (.env.example): the default


bind = os.environ.get("GUNICORN_BIND") or "0.0.0.0:8000"
workers = _int("WEB_CONCURRENCY", os.cpu_count() or 2)
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 4)
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "1").strip() in ("1", "")
keepalive = _int("GUNICORN_KEEPALIVE", 5)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Off by default: request lines usually come from the load balancer in front; "-" = stdout.
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None


def post_worker_init(worker: Any) -> None:
    gc.collect()
    gc.freeze()
