"""After a Redis outage, how long a check may still answer from a snapshot older than a committed
change that removed access (issue 14: at most 5 s once Redis answers again).

    .venv/bin/python bench/redis_blip.py [--runs 5]

Against PostgreSQL and a redis-server of its own (devtools.redis_server), the cache of the
production server (`python -m payments_project.serve`) and of one Celery worker with its embedded
beat, which runs the invalidation retry job every ENTITLEMENTS_INVALIDATION_RETRY_SECONDS (the
broker is the shared Redis: the worker must not stall with the cache). Each run takes a customer
entitled to a feature:

1. the customer's check is answered twice, so their snapshot is in Redis;
2. Redis is paused (SIGSTOP: connections hang, as in a network blip);
3. staff revoke the entitlement (entitlement_set_status, the admin's action) in this process: it
   commits, and the snapshot's drop cannot reach Redis;
4. the check is asked once during the outage (answered from the database: it must say no);
5. Redis is resumed, and the check asked every 20 ms for 10 s.

- stale_s: from the resume to the last answer that still said "allowed" (0 when none did);
- denied_in_outage: runs whose check during the outage said no.

Last line: `redis_blip: stale_max_s=N stale_median_s=N denied_in_outage=N/N runs=N`.
Knobs: BENCH_DATABASE_URL, BENCH_BROKER_URL.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lib.procs import PYTHON, ROOT, database_create, free_port, migrate, server_start, start, stop

FEATURE = "blip_export"
POLL_SECONDS = 10.0
POLL_EVERY = 0.02
ENV = {
    "APP_ENV": "test",
    "DATABASE_URL": os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/payments_bench_blip"
    ),
    "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13"),
    "CELERY_TASK_ALWAYS_EAGER": "0",
    "REDIS_TIMEOUT_SECONDS": "0.2",
    "DJANGO_DEBUG": "0",
    "LOG_LEVEL": "WARNING",
    "LOG_FORMAT": "plain",
    "WEB_ACCESS_LOG": "0",
    "DJANGO_SETTINGS_MODULE": "payments_project.settings",
    "PYTHONPATH": str(ROOT),
}
LOGS = Path(tempfile.mkdtemp(prefix="bench-redis-blip-"))


def start_logged(command: list[str], name: str) -> subprocess.Popen[bytes]:
    return start(command, env=ENV, log=LOGS / f"{name}.log")


def database_prepare() -> None:
    database_create(ENV["DATABASE_URL"])
    migrate(ENV, timeout=900)


def customers_make(count: int) -> list[tuple[int, str]]:
    """`count` customers, each with an active subscription granting FEATURE: [(user id, token)]."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from billing.models import Feature, Plan, PlanFeature
    from entitlements.services import entitlement_grant_for_subscription
    from subscriptions.models import Subscription

    run = os.urandom(3).hex()
    feature, _ = Feature.objects.get_or_create(code=FEATURE, defaults={"name": "Blip export"})
    plan = Plan.objects.create(code=f"blip_{run}", name="Blip")
    PlanFeature.objects.create(plan=plan, feature=feature)
    now = timezone.now()
    customers = []
    for n in range(count):
        user = get_user_model().objects.create_user(username=f"blip_{run}_{n}")
        subscription = Subscription.objects.create(
            user=user,
            plan=plan,
            status=Subscription.Status.ACTIVE,
            current_period_start=now,
            current_period_end=now + timedelta(days=30),
        )
        entitlement_grant_for_subscription(subscription=subscription)
        customers.append((user.pk, Token.objects.create(user=user).key))
    return customers


def allowed(conn: http.client.HTTPConnection, token: str) -> bool:
    conn.request(
        "GET", f"/api/v1/entitlements/check?feature={FEATURE}", headers={"Authorization": f"Token {token}"}
    )
    response = conn.getresponse()
    body = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"check answered {response.status}: {body}")
    return bool(body["allowed"])


def one_run(redis_server: Any, port: int, user_id: int, token: str) -> tuple[float, bool]:
    """(stale_s, denied during the outage) for one customer."""
    from django_redis import get_redis_connection

    from entitlements.models import Entitlement
    from entitlements.services import entitlement_set_status

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if not (allowed(conn, token) and allowed(conn, token)):  # DRF path, then warm from Redis
            raise RuntimeError("the customer is not entitled")
        # Pooled connections are dropped first (as under load, every pooled connection busy): the
        # drop then opens a new one, whose handshake times out. (A command written to an idle
        # pooled connection of a paused server would be buffered by the kernel and run on resume.)
        get_redis_connection("default").connection_pool.disconnect()
        redis_server.pause()
        try:
            entitlement_set_status(
                entitlements=Entitlement.objects.filter(user_id=user_id), status="revoked", actor=None
            )
            denied = not allowed(conn, token)
        finally:
            redis_server.resume()
        resumed = time.monotonic()
        last_allowed = None
        while (now := time.monotonic()) - resumed < POLL_SECONDS:
            if allowed(conn, token):
                last_allowed = now
            time.sleep(POLL_EVERY)
        get_redis_connection("default").connection_pool.disconnect()
        return (0.0 if last_allowed is None else last_allowed - resumed), denied
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from devtools.redis_server import RedisServer

    began = time.monotonic()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as folder, RedisServer(Path(folder)) as redis_server:
        ENV["REDIS_URL"] = redis_server.url
        try:
            database_prepare()
            os.environ.update(ENV)
            import django

            django.setup()
            import redis

            redis.Redis.from_url(ENV["CELERY_BROKER_URL"]).flushdb()
            customers = customers_make(args.runs)
            port = free_port()
            worker = [PYTHON, "-m", "celery", "-A", "payments_project", "worker", "--beat", "--pool=solo"]
            processes.append(
                start_logged(
                    [*worker, "--loglevel=WARNING", "--without-gossip", "--without-mingle"], "worker"
                )
            )
            processes.append(server_start(port, env=ENV, log=LOGS / "web.log"))
            time.sleep(3)  # the worker connects and beat reads its schedule
            print(f"ready in {time.monotonic() - began:.1f}s", flush=True)
            stale: list[float] = []
            denied = 0
            for n, (user_id, token) in enumerate(customers, 1):
                seconds, refused = one_run(redis_server, port, user_id, token)
                stale.append(seconds)
                denied += refused
                print(
                    f"run {n}: stale {seconds:.2f}s, outage check {'denied' if refused else 'ALLOWED'}",
                    flush=True,
                )
        except BaseException:
            print(f"the bench failed; the processes' output is in {LOGS}", file=sys.stderr)
            raise
        finally:
            for process in reversed(processes):
                stop(process)
    print(f"total {time.monotonic() - began:.1f}s")
    print(
        f"redis_blip: stale_max_s={max(stale):.2f} stale_median_s={statistics.median(stale):.2f}"
        f" denied_in_outage={denied}/{len(stale)} runs={len(stale)}"
    )


if __name__ == "__main__":
    main()
