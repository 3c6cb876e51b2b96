"""Usage ingest throughput over HTTP against the production server, beside PostgreSQL's own speed.

    .venv/bin/python bench/usage.py [--duration 10]

Creates/migrates PostgreSQL `payments_bench_usage` (slow only the first time), fills 100 users
entitled to 5 metered features through one plan (hard limits, high enough never to refuse: the
quota check still runs on every event), a token for each and a service account, starts the
production server (`python -m payments_project.serve`, token auth, rate limiter on, set too high to
refuse) on a free port and drives it from a second process (aiohttp):

- warm-up: 3 s of single events, not counted (each worker process reads its users' tokens and
  quotas once: their first events take the slower full path);
- single: POST /api/v1/usage/events/, one event per request, 16 connections (events/s, p99), by
  wrk when installed (`apt-get install wrk`: C, where aiohttp took a good part of the 2 cores
  from the server it measures), else by aiohttp;
- batch: POST /api/v1/usage/batch/ of 1,000 events over the 100 users and 5 features, by the
  service account, 4 connections (events/s; see BATCH_CONNECTIONS);
- raw_insert: the same number of rows inserted by psycopg straight into the ledger table with
  `INSERT ... ON CONFLICT DO NOTHING`, 1,000 rows per statement, as many connections (rows/s);
- race: 16 connections spend one user's quota of 100 in units of 1, 7 and 13 at once; the overrun
  is how far the counter went past 100 plus how far it differs from the ledger (0 expected).

The last line is `usage: single_eps=N batch_eps=N batch/raw_insert=R quota_race_overrun=N`.
Knobs: the server's own variables (WEB_CONCURRENCY, WEB_THREADS), BENCH_DATABASE_URL and
BENCH_REDIS_URL (default `payments_bench_usage` and Redis database 13).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from lib import wrk
from lib.procs import PYTHON, ROOT, database_create, free_port, migrate, server_start, stop

USERS = 100
FEATURES = 5
BATCH = 1000
BATCHES = 100  # per batch run: 100,000 events (about 5 s: 40 took 2 s, too short to average out a checkpoint)
SINGLE_CONNECTIONS = 16
WARM_UP_SECONDS = 3.0
# Four, two per server worker on average: each worker listens on its own SO_REUSEPORT socket and
# the kernel places a connection by a hash of its addresses, so with two connections both landed
# on one worker (whose GIL then ran both batches' Python, the other worker idle) in about half the
# runs, and the figure measured that coin flip: 21,950-30,719/s over eight runs, against
# 27,780-33,594/s with four (README "Benchmarks").
BATCH_CONNECTIONS = 4
ENV = {
    "APP_ENV": "test",
    "DATABASE_URL": os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/payments_bench_usage"
    ),
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
    "RATELIMIT_RATES": "default=100000000/m,usage=100000000/m",
    "DJANGO_DEBUG": "0",
    "LOG_LEVEL": "WARNING",
    "LOG_FORMAT": "plain",
    "DJANGO_SETTINGS_MODULE": "payments_project.settings",
    "PYTHONPATH": str(ROOT),
}


# --- setup (this process) -----------------------------------------------------------------------


def database_prepare() -> None:
    database_create(ENV["DATABASE_URL"])
    migrate(ENV, timeout=600)


def data_fill() -> dict[str, Any]:
    """Fresh rows every run: {users: [{id, token}], service: token, race_user: {id, token}}."""
    os.environ.update(ENV)
    import django

    django.setup()
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from billing.models import Feature, Plan, PlanFeature
    from entitlements.models import Entitlement
    from subscriptions.models import Subscription

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE usage_usagerecord, usage_usagecounter, usage_usageadjustment, usage_usagereservation,"
            " usage_usagethreshold, entitlements_entitlement, subscriptions_familymember,"
            " subscriptions_subscriptionhistory, subscriptions_subscription, authtoken_token,"
            " billing_planfeature, events_domainevent RESTART IDENTITY CASCADE"
        )
    get_user_model().objects.filter(username__startswith="bench").delete()
    Plan.objects.filter(code__startswith="bench").delete()
    Feature.objects.filter(code__startswith="bench").delete()
    now = timezone.now()
    features = Feature.objects.bulk_create(
        [Feature(code=f"bench_u{i}", name=f"Bench {i}", kind=Feature.Kind.METERED) for i in range(FEATURES)]
    )
    plan = Plan.objects.create(code="bench_usage", name="Bench usage")
    race_plan = Plan.objects.create(code="bench_race", name="Bench race")
    PlanFeature.objects.bulk_create(
        [
            PlanFeature(plan=plan, feature=f, limit=10**12, reset_period=PlanFeature.Reset.BILLING_PERIOD)
            for f in features
        ]
        + [PlanFeature(plan=race_plan, feature=features[0], limit=100, reset_period="billing_period")]
    )
    User = get_user_model()
    unusable = make_password(None)
    users = User.objects.bulk_create(
        [User(username=f"bench{i}", password=unusable) for i in range(USERS + 2)]
    )
    service, race_user, users = users[-2], users[-1], users[:-2]
    service.groups.add(Group.objects.get(name="service"))
    tokens = {u.pk: Token.objects.create(user=u).key for u in [*users, service, race_user]}
    for user in [*users, race_user]:
        chosen = race_plan if user is race_user else plan
        sub = Subscription.objects.create(
            user=user,
            plan=chosen,
            status=Subscription.Status.ACTIVE,
            current_period_start=now - timedelta(days=1),
            current_period_end=now + timedelta(days=29),
        )
        Entitlement.objects.bulk_create(
            [
                Entitlement(
                    user=user,
                    feature=pf.feature,
                    plan=chosen,
                    subscription=sub,
                    granted_at=now,
                    limit=pf.limit,
                    reset_period=pf.reset_period,
                )
                for pf in PlanFeature.objects.filter(plan=chosen).select_related("feature")
            ]
        )
    with connection.cursor() as cursor:
        # Fresh statistics for the rows just written, as autovacuum keeps them in production: the
        # plans (prepared once per connection) are made for tables of this size.
        cursor.execute("ANALYZE")
    return {
        "users": [{"id": u.pk, "token": tokens[u.pk]} for u in users],
        "service": tokens[service.pk],
        "race_user": {"id": race_user.pk, "token": tokens[race_user.pk]},
        "race_feature": features[0].code,
    }


def raw_insert(rows: int, connections: int) -> float:
    """Rows/s of psycopg's INSERT ... ON CONFLICT DO NOTHING into the ledger, 1,000 rows a statement."""
    import threading

    import psycopg

    table_columns = (
        "user_id, family_id, subject, feature_code, quantity, resource_type, resource_size, operation,"
        " idempotency_key, fingerprint, metadata, occurred_at, recorded_at, period_start, over_limit"
    )
    with psycopg.connect(ENV["DATABASE_URL"]) as conn:
        user_ids = [
            r[0] for r in conn.execute("SELECT id FROM auth_user WHERE username LIKE 'bench%%' ORDER BY id")
        ]
    user_ids = user_ids[:USERS]
    per_connection = rows // BATCH // connections
    values = ", ".join(["(%s, NULL, %s, %s, 1, '', 0, '', %s, '', '{}', now(), now(), now(), false)"] * BATCH)
    sql = f"INSERT INTO usage_usagerecord ({table_columns}) VALUES {values} ON CONFLICT DO NOTHING"  # noqa: S608 - table names from the models, values as parameters

    def worker(number: int) -> None:
        with psycopg.connect(ENV["DATABASE_URL"], autocommit=True) as conn:
            for b in range(per_connection):
                params: list[Any] = []
                for i in range(BATCH):
                    user = user_ids[i % USERS]
                    params += [user, f"u{user}", f"bench_u{(i // USERS) % FEATURES}", f"raw-{number}-{b}-{i}"]
                conn.execute(sql, params)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per_connection * connections * BATCH / (time.perf_counter() - started)


def quota_overrun(world: dict[str, Any]) -> int:
    import psycopg

    subject = f"u{world['race_user']['id']}"
    with psycopg.connect(ENV["DATABASE_URL"]) as conn:
        counters = conn.execute(
            "SELECT used FROM usage_usagecounter WHERE subject = %s", [subject]
        ).fetchall()
        ledger = conn.execute(
            "SELECT COALESCE(SUM(quantity), 0) FROM usage_usagerecord WHERE subject = %s", [subject]
        ).fetchone()
    used = sum(row[0] for row in counters)
    return max(0, used - 100) + abs(used - int(ledger[0]))  # type: ignore[index]


def load_run(port: int, scenario: str, world_file: str, duration: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            PYTHON,
            __file__,
            "--load",
            scenario,
            "--port",
            str(port),
            "--world",
            world_file,
            "--duration",
            str(duration),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 300,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --- load generator (second process) -------------------------------------------------------------


async def _drive(port: int, scenario: str, world: dict[str, Any], duration: float) -> dict[str, Any]:
    import aiohttp
    import orjson

    latencies: list[float] = []
    events = 0
    errors = 0
    counter = 0
    run = uuid.uuid4().hex[:8]
    connections = BATCH_CONNECTIONS if scenario == "batch" else SINGLE_CONNECTIONS
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:

        async def worker() -> None:
            nonlocal counter, errors, events
            while True:
                n = counter
                counter += 1
                if scenario == "batch":
                    if n >= BATCHES:
                        return
                    body = {
                        "events": [
                            {
                                "user_id": world["users"][i % USERS]["id"],
                                "feature": f"bench_u{(i // USERS) % FEATURES}",
                                "idempotency_key": f"{run}-{n}-{i}",
                                "quantity": 1,
                            }
                            for i in range(BATCH)
                        ]
                    }
                    token, path, size, ok = world["service"], "/api/v1/usage/batch/", BATCH, (200,)
                elif scenario == "race":
                    if n >= 16 * 12:
                        return
                    body = {
                        "feature": world["race_feature"],
                        "idempotency_key": f"{run}-{n}",
                        "quantity": (1, 7, 13)[n % 3],
                    }
                    token, path, size, ok = (
                        world["race_user"]["token"],
                        "/api/v1/usage/events/",
                        1,
                        (201, 429),
                    )
                else:
                    if time.monotonic() >= deadline:
                        return
                    user = world["users"][n % USERS]
                    body = {
                        "feature": f"bench_u{n % FEATURES}",
                        "idempotency_key": f"{run}-{n}",
                        "quantity": 1,
                    }
                    token, path, size, ok = user["token"], "/api/v1/usage/events/", 1, (201,)
                headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
                start = time.perf_counter()
                try:
                    async with session.post(path, data=orjson.dumps(body), headers=headers) as response:
                        await response.read()
                        if response.status in ok:
                            events += size
                        else:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000 if latencies else 0.0
    return {
        "scenario": scenario,
        "requests": len(latencies),
        "events": events,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "eps": round(events / elapsed, 1),
        "p99_ms": round(p99, 2),
    }


_WRK_SCRIPT = """
local tokens = {%(tokens)s}
local counter = 0
function setup(thread)
  thread:set("first", counter)
  counter = counter + 1
end
function init(args)
  n = first
end
function request()
  local token = tokens[(n %% #tokens) + 1]
  local body = '{"feature":"bench_u' .. (n %% %(features)d)
    .. '","idempotency_key":"%(run)s-' .. n .. '","quantity":1}'
  n = n + %(threads)d
  return wrk.format("POST", "/api/v1/usage/events/", {
    ["Authorization"] = "Token " .. token, ["Content-Type"] = "application/json"}, body)
end
"""
WRK_THREADS = 2


def _drive_wrk_single(port: int, world: dict[str, Any], duration: float) -> dict[str, Any]:
    """The single scenario by wrk (C, a fraction of aiohttp's CPU on the same 2 cores): the same
    requests, users in turn, distinct keys; a 201 is an event."""
    script = _WRK_SCRIPT % {
        "tokens": ",".join(f'"{user["token"]}"' for user in world["users"]),
        "features": FEATURES,
        "run": uuid.uuid4().hex[:8],
        "threads": WRK_THREADS,
    }
    result = wrk.run(
        script,
        url=f"http://127.0.0.1:{port}",
        connections=SINGLE_CONNECTIONS,
        threads=WRK_THREADS,
        duration=duration,
    )
    # A 201 is an event; a refusal (none expected: the quotas are far above the load) is not.
    return {
        "scenario": "single",
        **result,
        "events": result["ok"],
        "eps": round(result["ok"] / result["seconds"], 1),
    }


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--load")
    parser.add_argument("--port", type=int)
    parser.add_argument("--world")
    args = parser.parse_args()
    if args.load:
        world = json.loads(Path(args.world).read_text())
        if args.load == "single" and wrk.available():
            print(json.dumps(_drive_wrk_single(args.port, world, args.duration)))
            return
        print(json.dumps(asyncio.run(_drive(args.port, args.load, world, args.duration))))
        return

    began = time.monotonic()
    database_prepare()
    print(f"database ready in {time.monotonic() - began:.1f}s", flush=True)
    world = data_fill()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(world, handle)
        world_file = handle.name
    port = free_port()
    server = server_start(port, env=ENV)
    results: dict[str, dict[str, Any]] = {}
    try:
        # Steady state: each worker process first reads its users' tokens and quotas (their first
        # events take the full path), which the product does once per process, not per event.
        warm = load_run(port, "single", world_file, WARM_UP_SECONDS)
        print(f"warm-up  {warm['eps']:10.1f} events/s over {warm['seconds']}s (not counted)", flush=True)
        for scenario in ("single", "batch", "race"):
            results[scenario] = result = load_run(port, scenario, world_file, args.duration)
            print(
                f"{scenario:8s} {result['eps']:10.1f} events/s  p99 {result['p99_ms']:8.2f} ms  "
                f"({result['requests']} requests, {result['errors']} errors, {result['seconds']}s, "
                f"{result.get('generator', 'aiohttp')})",
                flush=True,
            )
    finally:
        stop(server)
        Path(world_file).unlink(missing_ok=True)
    raw = raw_insert(BATCH * BATCHES, BATCH_CONNECTIONS)
    print(f"raw_insert {raw:10.1f} rows/s (psycopg, {BATCH} rows per INSERT ... ON CONFLICT DO NOTHING)")
    overrun = quota_overrun(world)
    print(f"total {time.monotonic() - began:.1f}s")
    print(
        f"usage: single_eps={results['single']['eps']:.0f} batch_eps={results['batch']['eps']:.0f} "
        f"batch/raw_insert={results['batch']['eps'] / raw:.2f} quota_race_overrun={overrun}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
