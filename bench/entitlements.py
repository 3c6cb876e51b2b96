"""Entitlement check throughput and latency, over HTTP, against the production server on loopback.

    .venv/bin/python bench/entitlements.py [--duration 10]

Creates/migrates PostgreSQL `payments_bench` (migrate is slow only the first time), fills 10,000
users with a subscription and its entitlements (bulk_create), starts the production server
(`python -m payments_project.serve`: granian, a worker per core, 4 threads, access log) on a free
port, and drives it from a second process (wrk when installed, else aiohttp; 16 connections,
fixed duration per scenario): (a) GET /health/live, (b) a cached single check,
(c) a bulk check of 100 codes, (d) a cold check (each request a user never checked since the cache
was flushed). Stops the server itself; the last line is
`entitlements: single/trivial=R bulk/single=R single_p99_ms=N`.

Knobs: the server's own variables (WEB_CONCURRENCY, WEB_THREADS, WEB_ACCESS_LOG: see
payments_project/serve.py), the same for every scenario, BENCH_WRK_THREADS (wrk's threads,
default 2), and BENCH_DATABASE_URL / BENCH_REDIS_URL (default `payments_bench` and Redis database
12: give each copy its own on a shared machine).
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
from pathlib import Path
from typing import Any

from lib import wrk
from lib.procs import PYTHON, ROOT, database_create, free_port, migrate, server_start, stop

USERS = 10_000
FEATURES = 100
PLANS = 5  # each plan holds 20 of the 100 features
WARM_USERS = 1_000
CONNECTIONS = 16
WRK_THREADS = int(os.environ.get("BENCH_WRK_THREADS", "2"))
ENV = {
    "APP_ENV": "test",
    "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/payments_bench"),
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
    # The limiter stays ON (one Redis round trip per request, as in production), set too high to refuse.
    "RATELIMIT_RATES": "default=100000000/m,entitlements=100000000/m",
    "DJANGO_DEBUG": "0",
    "LOG_LEVEL": "WARNING",
    "LOG_FORMAT": "plain",
    "DJANGO_SETTINGS_MODULE": "payments_project.settings",
    "PYTHONPATH": str(ROOT),
}


# --- setup (this process) -----------------------------------------------------------------------


def database_prepare() -> None:
    database_create(ENV["DATABASE_URL"])
    migrate(ENV, timeout=150)


def data_fill() -> list[dict[str, Any]]:
    """Fresh bench rows every run; returns [{token, feature}] per user (index = user number)."""
    os.environ.update(ENV)
    import django

    django.setup()
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from billing.models import Feature, Plan, PlanFeature
    from entitlements.models import Entitlement
    from subscriptions.models import Subscription

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE entitlements_entitlement, subscriptions_familymember,"
            " subscriptions_subscriptionhistory, subscriptions_subscription, authtoken_token,"
            " billing_planfeature RESTART IDENTITY CASCADE"
        )
    get_user_model().objects.filter(username__startswith="bench").delete()
    Plan.objects.filter(code__startswith="bench").delete()
    Feature.objects.filter(code__startswith="bench").delete()

    now = timezone.now()
    features = Feature.objects.bulk_create(
        [Feature(code=f"bench_f{i:03d}", name=f"Bench {i}") for i in range(FEATURES)]
    )
    plans = Plan.objects.bulk_create([Plan(code=f"bench_p{i}", name=f"Bench {i}") for i in range(PLANS)])
    per_plan = FEATURES // PLANS
    plan_features = {plan.pk: features[i * per_plan : (i + 1) * per_plan] for i, plan in enumerate(plans)}
    PlanFeature.objects.bulk_create(
        [PlanFeature(plan_id=pid, feature=f) for pid, fs in plan_features.items() for f in fs]
    )
    User = get_user_model()
    UNUSABLE = make_password(None)
    users = User.objects.bulk_create(
        [User(username=f"bench{i}", email=f"bench{i}@example.com", password=UNUSABLE) for i in range(USERS)],
        batch_size=5000,
    )
    tokens = Token.objects.bulk_create(
        [Token(key=Token.generate_key(), user=user) for user in users], batch_size=5000
    )
    subscriptions = Subscription.objects.bulk_create(
        [
            Subscription(
                user=user,
                plan=plans[i % PLANS],
                status=Subscription.Status.ACTIVE,
                current_period_start=now,
                current_period_end=now + timedelta(days=30),
            )
            for i, user in enumerate(users)
        ],
        batch_size=5000,
    )
    rows = [
        Entitlement(
            user_id=sub.user_id,
            feature=feature,
            plan_id=sub.plan_id,
            subscription=sub,
            granted_at=now,
            expires_at=sub.current_period_end,
        )
        for sub in subscriptions
        for feature in plan_features[sub.plan_id]
    ]
    Entitlement.objects.bulk_create(rows, batch_size=10_000)
    return [
        {"token": token.key, "feature": plan_features[plans[i % PLANS].pk][i % per_plan].code}
        for i, token in enumerate(tokens)
    ]


def redis_flush() -> None:
    import redis

    redis.Redis.from_url(ENV["REDIS_URL"]).flushdb()


def load_run(port: int, scenario: str, users_file: str, duration: float) -> dict[str, Any]:
    """The load generator runs in a second process (this script with --load): wrk when installed
    (C, far lighter on the shared cores), else the Python aiohttp generator."""
    out = subprocess.run(
        [
            PYTHON,
            __file__,
            "--load",
            scenario,
            "--port",
            str(port),
            "--users",
            users_file,
            "--duration",
            str(duration),
            *(["--wrk"] if wrk.available() else []),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --- load generator (second process) -------------------------------------------------------------


def _request(scenario: str, users: list[dict[str, Any]], n: int) -> tuple[str, str, dict[str, str], Any]:
    if scenario == "trivial":
        return "GET", "/health/live", {}, None
    # cold: each request a user nobody checked since the flush; else the warmed users
    user = users[WARM_USERS + n] if scenario == "cold" else users[n % WARM_USERS]
    headers = {"Authorization": f"Token {user['token']}"}
    if scenario == "bulk":
        codes = [f"bench_f{i:03d}" for i in range(FEATURES)]
        return "POST", "/api/v1/entitlements/bulk-check", headers, {"features": codes}
    return "GET", f"/api/v1/entitlements/check?feature={user['feature']}", headers, None


async def _drive(port: int, scenario: str, users: list[dict[str, Any]], duration: float, limit: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    counter = 0
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=CONNECTIONS, force_close=False)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:

        async def worker() -> None:
            nonlocal counter, errors
            while time.monotonic() < deadline and counter < limit:
                n = counter
                counter += 1
                method, path, headers, body = _request(scenario, users, n)
                start = time.perf_counter()
                try:
                    async with session.request(method, path, headers=headers, json=body) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else 0.0
        )

    return {
        "scenario": scenario,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


_WRK_SCRIPT = """
local users = {%(users)s}
local method, body = "%(method)s", %(body)s
local counter = 0
function setup(thread)
  thread:set("first", counter)
  counter = counter + 1
end
function init(args)
  n = first
end
function request()
  local user = users[(n %% #users) + 1]
  n = n + %(threads)d
  local headers = {}
  if user[1] ~= "" then headers["Authorization"] = "Token " .. user[1] end
  if body then headers["Content-Type"] = "application/json" end
  return wrk.format(method, user[2], headers, body)
end
"""


def _drive_wrk(port: int, scenario: str, users: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """Same requests as _drive (cold: users never checked, in order; wraps if wrk outruns them)."""
    count = {"trivial": 1, "cold": len(users) - WARM_USERS}.get(scenario, WARM_USERS)
    rows = [_request(scenario, users, n) for n in range(count)]
    method, _, _, body = rows[0]
    entries = []
    for _, path, headers, _ in rows:
        token = headers.get("Authorization", "").removeprefix("Token ")
        entries.append(f'{{"{token}","{path}"}}')
    script = _WRK_SCRIPT % {
        "users": ",".join(entries),
        "method": method,
        "body": "nil" if body is None else json.dumps(json.dumps(body)),
        "threads": WRK_THREADS,
    }
    result = wrk.run(
        script,
        url=f"http://127.0.0.1:{port}",
        connections=CONNECTIONS,
        threads=WRK_THREADS,
        duration=duration,
    )
    return {"scenario": scenario, **result}


def load_main(args: argparse.Namespace) -> None:
    users = json.loads(Path(args.users).read_text())
    limit = 10**9
    if args.load in ("single", "bulk"):  # warm the snapshots of the users we will ask about
        asyncio.run(_drive(args.port, args.load, users, 30, WARM_USERS))
    if args.wrk:
        print(json.dumps(_drive_wrk(args.port, args.load, users, args.duration)))
        return
    if args.load == "cold":
        limit = len(users) - WARM_USERS
    print(json.dumps(asyncio.run(_drive(args.port, args.load, users, args.duration, limit))))


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--load")
    parser.add_argument("--port", type=int)
    parser.add_argument("--users")
    parser.add_argument("--wrk", action="store_true")
    args = parser.parse_args()
    if args.load:
        load_main(args)
        return

    began = time.monotonic()
    database_prepare()
    print(f"database ready in {time.monotonic() - began:.1f}s", flush=True)
    t = time.monotonic()
    users = data_fill()
    print(f"filled {USERS} users, {USERS * FEATURES // PLANS} entitlements in {time.monotonic() - t:.1f}s")
    redis_flush()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(users, handle)
        users_file = handle.name
    port = free_port()
    server = server_start(port, env=ENV)
    results: dict[str, dict[str, Any]] = {}
    try:
        for scenario in ("trivial", "single", "bulk", "cold"):
            if scenario == "cold":
                redis_flush()
            results[scenario] = result = load_run(port, scenario, users_file, args.duration)
            print(
                f"{scenario:8s} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:7.2f} ms  "
                f"p99 {result['p99_ms']:7.2f} ms  ({result['requests']} requests, {result['errors']} errors,"
                f" {result['seconds']}s, {result.get('generator', 'aiohttp')})",
                flush=True,
            )
    finally:
        stop(server)
        Path(users_file).unlink(missing_ok=True)
    print(f"total {time.monotonic() - began:.1f}s")
    single_trivial = results["single"]["rps"] / results["trivial"]["rps"]
    bulk_single = results["bulk"]["rps"] / results["single"]["rps"]
    print(
        f"entitlements: single/trivial={single_trivial:.2f} bulk/single={bulk_single:.2f} "
        f"single_p99_ms={results['single']['p99_ms']:.1f}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
