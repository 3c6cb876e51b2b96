"""gunicorn settings for production (the Dockerfile's command) and bench/entitlements.py:

    gunicorn -c payments_project/gunicorn_conf.py payments_project.wsgi:application

Environment variables override the defaults (an empty one, as .env.example leaves them, means the
default).

- One worker per usable core (WEB_CONCURRENCY; by default the cores this process may run on,
  capped by a cgroup CPU quota, so a container limited to 2 CPUs on a 32-core host runs 2),
  gthread with a few threads so a worker keeps connections alive (a sync worker closes each one)
  and overlaps its Redis/PostgreSQL waits.
- Each worker listens on its own SO_REUSEPORT socket (GUNICORN_REUSE_PORT), so the kernel spreads
  new connections over the workers; on one shared socket a worker often accepted 14 of 16
  keep-alive connections and queued them behind its threads while the other idled (seen in
  bench/entitlements.py). What it costs: the kernel spreads by hash, not by load, and
  connections still waiting in the accept queue of a worker that exits (reload, timeout kill,
  crash) are reset; a proxy in front does not retry a POST, so its client sees a 502.
- Access log on stdout by default (GUNICORN_ACCESSLOG: a path, or "off").
- After a worker has loaded the app and built what Django otherwise builds on the first request
  (URL resolvers), everything it holds is moved out of the garbage collector's reach
  (`gc.freeze()`): a full collection otherwise walks Django's whole import graph every few
  thousand requests, a pause of tens of milliseconds that was most of the trivial view's p99 in
  bench/entitlements.py. Objects created per request are collected as usual.
"""

from __future__ import annotations

import gc
import math
import os
from pathlib import Path
from typing import Any


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 quota (cpu.max)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return max(1, usable)
    if quota != "max":
        usable = min(usable, math.ceil(int(quota) / int(period)))
    return max(1, usable)


bind = os.environ.get("GUNICORN_BIND") or "0.0.0.0:8000"
workers = _int("WEB_CONCURRENCY", cores())
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 4)
reuse_port = _bool("GUNICORN_REUSE_PORT", True)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
_accesslog = os.environ.get("GUNICORN_ACCESSLOG", "").strip() or "-"
accesslog = None if _accesslog.lower() in ("off", "0", "none") else _accesslog


def post_worker_init(worker: Any) -> None:
    # Build the URL resolvers now (Django does it on the first request) so they get frozen too.
    from django.urls import get_resolver

    get_resolver().reverse_dict  # noqa: B018 - populates the resolver tree
    gc.collect()
    gc.freeze()
