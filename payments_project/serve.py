"""The production web server: granian serving the WSGI app, configured from the environment.

    python -m payments_project.serve

The Dockerfile's command and what bench/entitlements.py measures. granian (HTTP in Rust, the app
in Python threads) rather than gunicorn's gthread worker: on the same 2-core machine and app it
served the single entitlement check at ~3,500-3,800 requests/s instead of ~2,400-2,900 and at a
p99 of 8.6-10.9 ms instead of 12.9-19 ms (bench/entitlements.py, README "Benchmarks").

- WEB_CONCURRENCY: worker processes; default one per usable core (the CPU affinity, capped by a
  cgroup CPU quota, so a container limited to 2 CPUs on a 32-core host runs 2).
- WEB_THREADS (4): Python threads per worker, so a request waiting on Stripe or PostgreSQL does not
  hold up the others.
- WEB_HOST (0.0.0.0), PORT (8000), WEB_BACKLOG (1024).
- WEB_ACCESS_LOG (1): a line per request on stdout.
- WEB_WORKER_KILL_TIMEOUT (30): seconds the stopping workers get to finish their requests (one
  budget for all of them); docker-compose.yml gives the container 35 s before it is killed.
- PROMETHEUS_MULTIPROC_DIR: where the workers write their metrics so /metrics adds them up
  (payments_project/metrics_multiprocess.py); default a fresh temporary folder, removed at exit.

Variables are read as the settings read theirs (payments_project/env.py): an empty number means
the default, an empty boolean means off. A worker that dies is
started again. Each worker listens on its own SO_REUSEPORT socket: connections still waiting in
the queue of a worker that dies are reset (docker-compose.yml sets net.ipv4.tcp_migrate_req so
the kernel hands them to another worker). granian copies the process environment into every
request's environ: payments_project/wsgi.py drops those entries before Django sees them.
Behind a proxy that terminates TLS, set DJANGO_BEHIND_TLS_PROXY=1 (X-Forwarded-Proto is trusted
only then).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from granian import Granian
from granian.constants import Interfaces

from payments_project.env import env_bool, env_int, env_str
from payments_project.metrics_multiprocess import metrics_dir_prepare, metrics_dir_remove

APP = "payments_project.wsgi:application"


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


def _positive(name: str, default: int) -> int:
    value = env_int(name, default)
    if value < 1:
        raise ImproperlyConfigured(f"{name} must be at least 1, got {value}")
    return value


def options() -> dict[str, Any]:
    """granian's settings, from the environment."""
    return {
        "target": APP,
        "interface": Interfaces.WSGI,
        "address": env_str("WEB_HOST").strip() or "0.0.0.0",  # noqa: S104 - a container's port
        "port": _positive("PORT", 8000),
        "workers": _positive("WEB_CONCURRENCY", cores()),
        "blocking_threads": _positive("WEB_THREADS", 4),
        "backlog": _positive("WEB_BACKLOG", 1024),
        "log_access": env_bool("WEB_ACCESS_LOG", default=True),
        "workers_kill_timeout": _positive("WEB_WORKER_KILL_TIMEOUT", 30),  # 0 would mean "wait forever"
        "respawn_failed_workers": True,
    }


def main() -> None:
    # Before any worker imports prometheus_client: /metrics then sums all workers.
    metrics_dir, created = metrics_dir_prepare()
    try:
        Granian(**options()).serve()
    finally:
        if created:
            metrics_dir_remove(metrics_dir)


if __name__ == "__main__":
    main()
